"""The event backbone: topology, transactional outbox with its relay, inbox consumer, operations."""
