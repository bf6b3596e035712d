"""The services: what members and moderators may ask for, with every check. The Discord adapter, the command
line and workers call these; none of them touches the store or the scheduler itself."""
