-- Each job's list item as the JSON object a page holds, computed by SQLite from the row's
-- columns (fields in the wire order; `description` only when set; json_object escapes
-- exactly as serde_json does), and kept in the indexes of the common list orders in place
-- of the columns it is made of. A page is then one column of each index entry, copied into
-- the answer as it is, rather than nine columns read one by one and written as JSON again.
-- The column is virtual: the table stores nothing more, and an index entry changes when
-- one of the item's columns does, as it did when the indexes held those columns.
ALTER TABLE jobs ADD COLUMN list_item TEXT GENERATED ALWAYS AS (
    CASE WHEN description IS NULL THEN json_object(
        'id', id, 'name', name, 'user_name', user_name,
        'type', type, 'status', status, 'abnormal_count', abnormal_count,
        'create_at', create_at, 'update_at', update_at
    ) ELSE json_object(
        'id', id, 'name', name, 'user_name', user_name, 'description', description,
        'type', type, 'status', status, 'abnormal_count', abnormal_count,
        'create_at', create_at, 'update_at', update_at
    ) END
) VIRTUAL;

DROP INDEX jobs_by_create_items;
CREATE INDEX jobs_by_create_items ON jobs(project_id, create_at, id, list_item);

DROP INDEX jobs_by_status_items;
CREATE INDEX jobs_by_status_items ON jobs(project_id, status, create_at, id, list_item);

DROP INDEX jobs_by_type_items;
CREATE INDEX jobs_by_type_items ON jobs(project_id, type, status, visible, create_at, id, list_item);
