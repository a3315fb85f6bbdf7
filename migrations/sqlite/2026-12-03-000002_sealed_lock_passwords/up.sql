-- The password of a lock command, sealed with the master key
-- (`admin_commands/<id>/password`) instead of in clear in `parameters`, and
-- cleared once no device still waits for the command.
ALTER TABLE admin_commands ADD COLUMN sealed_password BLOB;

-- Commands every device is done with need their password no more. A
-- command still queued or sent keeps it in `parameters` until it is done
-- (migrations cannot seal); it is removed then, as a sealed one is.
UPDATE admin_commands
SET parameters = json_remove(parameters, '$.password')
WHERE CASE WHEN json_valid(parameters)
           THEN json_type(parameters, '$.password') IS NOT NULL
           ELSE 0 END
  AND NOT EXISTS (
      SELECT 1 FROM admin_command_targets t
      WHERE t.command_id = admin_commands.id AND t.state IN ('queued', 'sent'));
