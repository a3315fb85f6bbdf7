DROP TABLE answered_activation_requests;
DROP TABLE activation_exchanges;
