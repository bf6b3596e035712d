"""The GPU scheduler: one asyncio task owns the queue and feeds batches to a backend in a worker thread."""
