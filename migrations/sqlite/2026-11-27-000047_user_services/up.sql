-- Per-user exceptions to the server's list of services ([policy] services):
-- a row turns one service book on or off for one user.
CREATE TABLE user_services (
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    service TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    PRIMARY KEY (user_id, service)
);
