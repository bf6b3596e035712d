"""The running process: settings, logging, and the composition root that wires the store, the scheduler and
the services together."""
