DROP TABLE device_replay_window;
