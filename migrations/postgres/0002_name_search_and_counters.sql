-- 1. Case-insensitive substring search on job names through a trigram index. The list asks
--    `lower(name) LIKE '%pattern%'` (pattern lower-cased, `%`, `_` and `\` escaped), which
--    this index serves for patterns of three characters or more.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX jobs_name_trgm ON jobs USING gin (lower(name) gin_trgm_ops);

-- 2. Counters that concurrent writers do not queue on. Each row of job_counts is now one of
--    16 slots of its (project, status, type, visible) key; a transaction adds to the slot of
--    its connection, so replicas and connections rarely touch the same row, and totals are
--    the sum of the slots (the list already sums). Changes are counted once per statement
--    from its transition tables, so a bulk insert or a multi-row delete is one upsert, and
--    the keys are locked in a fixed order.
ALTER TABLE job_counts ADD COLUMN slot SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE job_counts DROP CONSTRAINT job_counts_pkey;
ALTER TABLE job_counts ADD PRIMARY KEY (project_id, status, type, visible, slot);

DROP TRIGGER jobs_count_insert ON jobs;
DROP TRIGGER jobs_count_update ON jobs;
DROP FUNCTION litejobs_count_jobs();

CREATE FUNCTION litejobs_count_inserted_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts AS c (project_id, status, type, visible, slot, n)
    SELECT project_id, status, type, visible, pg_backend_pid() % 16, COUNT(*)
    FROM new_rows
    GROUP BY project_id, status, type, visible
    ORDER BY project_id, status, type, visible
    ON CONFLICT (project_id, status, type, visible, slot) DO UPDATE SET n = c.n + excluded.n;
    RETURN NULL;
END;
$$;

CREATE FUNCTION litejobs_count_deleted_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts AS c (project_id, status, type, visible, slot, n)
    SELECT project_id, status, type, visible, pg_backend_pid() % 16, -COUNT(*)
    FROM old_rows
    GROUP BY project_id, status, type, visible
    ORDER BY project_id, status, type, visible
    ON CONFLICT (project_id, status, type, visible, slot) DO UPDATE SET n = c.n + excluded.n;
    RETURN NULL;
END;
$$;

CREATE FUNCTION litejobs_count_updated_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts AS c (project_id, status, type, visible, slot, n)
    SELECT project_id, status, type, visible, pg_backend_pid() % 16, SUM(d)
    FROM (
        SELECT project_id, status, type, visible, -1 AS d FROM old_rows
        UNION ALL
        SELECT project_id, status, type, visible, 1 AS d FROM new_rows
    ) AS changes
    GROUP BY project_id, status, type, visible
    HAVING SUM(d) <> 0
    ORDER BY project_id, status, type, visible
    ON CONFLICT (project_id, status, type, visible, slot) DO UPDATE SET n = c.n + excluded.n;
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_count_inserted AFTER INSERT ON jobs
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION litejobs_count_inserted_jobs();

CREATE TRIGGER jobs_count_deleted AFTER DELETE ON jobs
REFERENCING OLD TABLE AS old_rows
FOR EACH STATEMENT EXECUTE FUNCTION litejobs_count_deleted_jobs();

CREATE TRIGGER jobs_count_updated AFTER UPDATE ON jobs
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION litejobs_count_updated_jobs();
