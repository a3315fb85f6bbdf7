DROP TABLE outbound_queue;
