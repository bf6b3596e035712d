"""The domain: plain Python, no discord, torch or SQL. Everything here is testable with a fake clock."""
