DROP TABLE user_services;
