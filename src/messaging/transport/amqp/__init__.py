"""RabbitMQ over AMQP 0-9-1 (aiormq, through aio-pika's connection): the only
package that imports the AMQP client."""

from messaging.transport.amqp import octets

# Before any connection exists: a short string that is not UTF-8 must never
# make the frame reader drop the connection (see messaging.transport.amqp.octets).
octets.install()
