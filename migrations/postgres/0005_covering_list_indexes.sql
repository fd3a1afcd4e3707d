-- The indexes of the common list orders carry every other column of a list item, so that a
-- page can be read from the index alone (an index-only scan, where the visibility map allows)
-- instead of fetching each of its rows from the table. Each keeps its key columns, and so
-- still serves the queries it served. The cost: larger index entries, and a status or
-- abnormal count change rewrites one more.
CREATE INDEX jobs_by_create_items ON jobs(project_id, create_at, id)
    INCLUDE (name, user_name, description, type, status, abnormal_count, update_at);
DROP INDEX jobs_by_create;

CREATE INDEX jobs_by_status_items ON jobs(project_id, status, create_at, id)
    INCLUDE (name, user_name, description, type, abnormal_count, update_at);
DROP INDEX jobs_by_status;

CREATE INDEX jobs_by_type_items ON jobs(project_id, type, status, visible, create_at, id)
    INCLUDE (name, user_name, description, abnormal_count, update_at);
DROP INDEX jobs_by_type;
