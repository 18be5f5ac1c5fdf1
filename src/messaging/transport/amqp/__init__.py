"""RabbitMQ over AMQP 0-9-1 (aiormq, through aio-pika's connection): the only
package that imports the AMQP client.

Importing it changes no other library's state: the bus's own connections read
frames with :mod:`~messaging.transport.amqp.frame_reader` and decode short
strings and tables leniently (:mod:`~messaging.transport.amqp.octets`,
:mod:`~messaging.transport.amqp.lenient`); aiormq's module and pamqp's codec
tables are left as they are.
"""
