UPDATE roles
   SET permissions = '["users.*","groups.*","policies.*","software.*","servers.*","devices.*","filters.*"]'
 WHERE name = 'Enterprise Administrator' AND builtin = 1;
DROP INDEX users_by_created;
DROP INDEX users_by_display_name;
DROP TABLE administrator_group_roles;
DROP TABLE administrator_group_members;
DROP TABLE administrator_groups;
DROP TABLE admin_sessions;
