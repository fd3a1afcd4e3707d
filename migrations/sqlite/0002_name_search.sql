-- Case-insensitive substring search on job names without scanning the project's jobs: an
-- FTS5 trigram index over jobs.name, kept by triggers in the same transaction as the change.
-- `detail=none` keeps it small; the list asks for every trigram of the pattern (AND) and
-- checks the candidates' names exactly, so positions are not needed.
CREATE VIRTUAL TABLE jobs_name_fts USING fts5(
    name,
    content = 'jobs',
    content_rowid = 'seq',
    tokenize = 'trigram',
    detail = 'none'
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
