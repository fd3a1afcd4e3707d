-- The name index keeps where each trigram stands in the name (detail=full), so that a pattern
-- is looked for as a phrase: the index then answers the names holding the whole pattern
-- (case-folded), where with detail=none it answered every name holding each of the pattern's
-- trigrams somewhere, and each of those rows had to be read to be checked.
DROP TRIGGER jobs_name_fts_insert;
DROP TRIGGER jobs_name_fts_delete;
DROP TRIGGER jobs_name_fts_update;
DROP TABLE jobs_name_fts;

CREATE VIRTUAL TABLE jobs_name_fts USING fts5(
    name,
    content = 'jobs',
    content_rowid = 'seq',
    tokenize = 'trigram',
    detail = 'full'
);

CREATE TRIGGER jobs_name_fts_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO jobs_name_fts (rowid, name) VALUES (NEW.seq, NEW.name);
END;

CREATE TRIGGER jobs_name_fts_delete AFTER DELETE ON jobs BEGIN
    INSERT INTO jobs_name_fts (jobs_name_fts, rowid, name) VALUES ('delete', OLD.seq, OLD.name);
END;

CREATE TRIGGER jobs_name_fts_update AFTER UPDATE OF name ON jobs BEGIN
    INSERT INTO jobs_name_fts (jobs_name_fts, rowid, name) VALUES ('delete', OLD.seq, OLD.name);
    INSERT INTO jobs_name_fts (rowid, name) VALUES (NEW.seq, NEW.name);
END;

INSERT INTO jobs_name_fts (jobs_name_fts) VALUES ('rebuild');
