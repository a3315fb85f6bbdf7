DROP TABLE device_backups;
DROP TABLE sync_item_errors;
DROP TABLE sync_items;
DROP TABLE sync_states;
DROP TABLE sync_settings;
