-- The indexes of the common list orders hold every column of a list item, so that a page is
-- read from the index alone: without them each of a page's rows was looked up in the table
-- by its rowid (a descent from the table's root per row), the largest part of a page's
-- SQLite work. Each keeps its leading columns, and so still serves the queries it served.
-- The cost: larger index entries, and a status or abnormal count change rewrites one more.
CREATE INDEX jobs_by_create_items ON jobs(
    project_id, create_at, id,
    name, user_name, description, type, status, abnormal_count, update_at
);
DROP INDEX jobs_by_create;

CREATE INDEX jobs_by_status_items ON jobs(
    project_id, status, create_at, id,
    name, user_name, description, type, abnormal_count, update_at
);
DROP INDEX jobs_by_status;

CREATE INDEX jobs_by_type_items ON jobs(
    project_id, type, status, visible, create_at, id,
    name, user_name, description, abnormal_count, update_at
);
DROP INDEX jobs_by_type;
