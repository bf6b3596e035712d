"""How the bot is started: the `imagine-bot` command line and the worker process."""
