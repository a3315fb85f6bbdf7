DROP TABLE admin_command_targets;
DROP TABLE admin_commands;
