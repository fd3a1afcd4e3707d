-- A second name index, of each lower-cased name's 4-grams (its four-character substrings),
-- for patterns of four characters or more. It is an FTS5 table without content whose one
-- column is the name's 4-grams separated by spaces; the tokenizer keeps `-`, `_` and `.`
-- inside tokens, so that each 4-gram of a name (`[-_.a-zA-Z0-9]` only) is one token. A
-- pattern is looked for as the jobs holding every 4-gram of a set covering it, and those
-- few candidates are checked exactly. A 4-gram names far fewer jobs than a trigram, and
-- without positions (`detail=none`) its list is a list of row ids: a selective pattern
-- reads a few short lists where the trigram index read three long ones with positions.
-- Being an FTS5 index, it takes a transaction's names in memory and writes them as one
-- segment at commit, as the trigram index does.
CREATE VIRTUAL TABLE jobs_name_grams USING fts5(
    grams,
    content = '',
    tokenize = "unicode61 tokenchars '-_.'",
    detail = 'none'
);

CREATE TRIGGER jobs_name_grams_insert AFTER INSERT ON jobs WHEN length(NEW.name) >= 4 BEGIN
    INSERT INTO jobs_name_grams (rowid, grams) VALUES (NEW.seq, (
        SELECT group_concat(substr(lower(NEW.name), i, 4), ' ') FROM (
            WITH RECURSIVE at(i) AS (
                SELECT 1 UNION ALL SELECT i + 1 FROM at WHERE i < length(NEW.name) - 3
            ) SELECT i FROM at
        )
    ));
END;

-- An index without content forgets a row by being given the tokens it was given.
CREATE TRIGGER jobs_name_grams_delete AFTER DELETE ON jobs WHEN length(OLD.name) >= 4 BEGIN
    INSERT INTO jobs_name_grams (jobs_name_grams, rowid, grams) VALUES ('delete', OLD.seq, (
        SELECT group_concat(substr(lower(OLD.name), i, 4), ' ') FROM (
            WITH RECURSIVE at(i) AS (
                SELECT 1 UNION ALL SELECT i + 1 FROM at WHERE i < length(OLD.name) - 3
            ) SELECT i FROM at
        )
    ));
END;

CREATE TRIGGER jobs_name_grams_update AFTER UPDATE OF name ON jobs BEGIN
    INSERT INTO jobs_name_grams (jobs_name_grams, rowid, grams)
    SELECT 'delete', OLD.seq, (
        SELECT group_concat(substr(lower(OLD.name), i, 4), ' ') FROM (
            WITH RECURSIVE at(i) AS (
                SELECT 1 UNION ALL SELECT i + 1 FROM at WHERE i < length(OLD.name) - 3
            ) SELECT i FROM at
        )
    ) WHERE length(OLD.name) >= 4;
    INSERT INTO jobs_name_grams (rowid, grams)
    SELECT NEW.seq, (
        SELECT group_concat(substr(lower(NEW.name), i, 4), ' ') FROM (
            WITH RECURSIVE at(i) AS (
                SELECT 1 UNION ALL SELECT i + 1 FROM at WHERE i < length(NEW.name) - 3
            ) SELECT i FROM at
        )
    ) WHERE length(NEW.name) >= 4;
END;

-- Merged as the trigram index is (migration 0006).
INSERT INTO jobs_name_grams (jobs_name_grams, rank) VALUES ('usermerge', 2);

-- The jobs already there.
INSERT INTO jobs_name_grams (rowid, grams)
SELECT seq, (
    SELECT group_concat(substr(lower(name), i, 4), ' ') FROM (
        WITH RECURSIVE at(i) AS (
            SELECT 1 UNION ALL SELECT i + 1 FROM at WHERE i < length(name) - 3
        ) SELECT i FROM at
    )
) FROM jobs WHERE length(name) >= 4;
