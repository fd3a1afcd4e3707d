-- The number of a project's jobs, whatever their status, type or visibility: the total of a
-- list without those filters, read from the project's 16 slots rather than summed over every
-- slot of every counter of the project (up to 16 for each status, type and visibility).
-- Kept by the counting triggers, in the statement that adds or removes jobs, after the
-- per-key counters (locks are taken in that order).
CREATE TABLE job_totals (
    project_id TEXT NOT NULL,
    slot       SMALLINT NOT NULL,
    n          BIGINT NOT NULL,
    PRIMARY KEY (project_id, slot)
);

INSERT INTO job_totals (project_id, slot, n)
SELECT project_id, 0, SUM(n) FROM job_counts GROUP BY project_id;

CREATE OR REPLACE FUNCTION litejobs_count_inserted_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts AS c (project_id, status, type, visible, slot, n)
    SELECT project_id, status, type, visible, pg_backend_pid() % 16, COUNT(*)
    FROM new_rows
    GROUP BY project_id, status, type, visible
    ORDER BY project_id, status, type, visible
    ON CONFLICT (project_id, status, type, visible, slot) DO UPDATE SET n = c.n + excluded.n;
    INSERT INTO job_totals AS t (project_id, slot, n)
    SELECT project_id, pg_backend_pid() % 16, COUNT(*)
    FROM new_rows
    GROUP BY project_id
    ORDER BY project_id
    ON CONFLICT (project_id, slot) DO UPDATE SET n = t.n + excluded.n;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION litejobs_count_deleted_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts AS c (project_id, status, type, visible, slot, n)
    SELECT project_id, status, type, visible, pg_backend_pid() % 16, -COUNT(*)
    FROM old_rows
    GROUP BY project_id, status, type, visible
    ORDER BY project_id, status, type, visible
    ON CONFLICT (project_id, status, type, visible, slot) DO UPDATE SET n = c.n + excluded.n;
    INSERT INTO job_totals AS t (project_id, slot, n)
    SELECT project_id, pg_backend_pid() % 16, -COUNT(*)
    FROM old_rows
    GROUP BY project_id
    ORDER BY project_id
    ON CONFLICT (project_id, slot) DO UPDATE SET n = t.n + excluded.n;
    RETURN NULL;
END;
$$;

-- Only a job moved to another project changes a total (nothing in the service moves one).
CREATE FUNCTION litejobs_total_moved_job() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_totals AS t (project_id, slot, n)
    VALUES (OLD.project_id, pg_backend_pid() % 16, -1), (NEW.project_id, pg_backend_pid() % 16, 1)
    ON CONFLICT (project_id, slot) DO UPDATE SET n = t.n + excluded.n;
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_total_moved AFTER UPDATE OF project_id ON jobs
FOR EACH ROW WHEN (OLD.project_id IS DISTINCT FROM NEW.project_id)
EXECUTE FUNCTION litejobs_total_moved_job();
