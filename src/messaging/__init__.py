"""Chimera message bus: agents talking over RabbitMQ with Protocol Buffers messages."""
