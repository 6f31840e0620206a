//! Definitions export and import (`/api/definitions`), in RabbitMQ's format.
