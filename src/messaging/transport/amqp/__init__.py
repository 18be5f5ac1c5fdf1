"""RabbitMQ over AMQP 0-9-1 (aiormq, through aio-pika's connection): the only
package that imports the AMQP client."""

from messaging.transport.amqp import frame_reader, octets

# Before any connection exists: a short string that is not UTF-8 must never
# make the frame reader drop the connection (see messaging.transport.amqp.octets).
octets.install()
# Frames are read in chunks and the hot ones decoded without pamqp's generic
# codec (see messaging.transport.amqp.frame_reader); aiormq's reader if it cannot be.
frame_reader.install()
