-- A trigram index of users' names and e-mail addresses (SQLite FTS5), kept
-- current by triggers: the console's search for a part of a name or address
-- (three characters or more) reads the index instead of every user.
CREATE VIRTUAL TABLE users_search USING fts5(
    display_name,
    email,
    content = 'users',
    content_rowid = 'id',
    tokenize = 'trigram'
);
INSERT INTO users_search(users_search) VALUES ('rebuild');

CREATE TRIGGER users_search_insert AFTER INSERT ON users BEGIN
    INSERT INTO users_search(rowid, display_name, email)
        VALUES (new.id, new.display_name, new.email);
END;

CREATE TRIGGER users_search_delete AFTER DELETE ON users BEGIN
    INSERT INTO users_search(users_search, rowid, display_name, email)
        VALUES ('delete', old.id, old.display_name, old.email);
END;

CREATE TRIGGER users_search_update AFTER UPDATE OF display_name, email ON users BEGIN
    INSERT INTO users_search(users_search, rowid, display_name, email)
        VALUES ('delete', old.id, old.display_name, old.email);
    INSERT INTO users_search(rowid, display_name, email)
        VALUES (new.id, new.display_name, new.email);
END;
