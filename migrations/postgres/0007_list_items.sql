-- Each job's list item as the JSON object a page holds, stored with the row and kept in the
-- indexes of the common list orders in place of the columns it is made of (as on SQLite,
-- migration 0008): a page is one column of each index entry, sent and copied into the
-- answer as it is, rather than nine columns encoded, sent, decoded and written as JSON again.
-- Fields in the wire order, `description` only when set; to_json escapes text exactly as
-- serde_json does. to_json is only STABLE in general (some types' text depends on settings),
-- but of text it is immutable, which a generated column needs.
CREATE FUNCTION litejobs_list_item(
    id TEXT, name TEXT, user_name TEXT, description TEXT, type TEXT, status TEXT,
    abnormal_count BIGINT, create_at BIGINT, update_at BIGINT
) RETURNS TEXT LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT '{"id":' || to_json(id)::text
        || ',"name":' || to_json(name)::text
        || ',"user_name":' || to_json(user_name)::text
        || COALESCE(',"description":' || to_json(description)::text, '')
        || ',"type":' || to_json(type)::text
        || ',"status":' || to_json(status)::text
        || ',"abnormal_count":' || abnormal_count::text
        || ',"create_at":' || create_at::text
        || ',"update_at":' || update_at::text
        || '}'
$$;

ALTER TABLE jobs ADD COLUMN list_item TEXT GENERATED ALWAYS AS (litejobs_list_item(
    id, name, user_name, description, type, status, abnormal_count, create_at, update_at
)) STORED;

DROP INDEX jobs_by_create_items;
CREATE INDEX jobs_by_create_items ON jobs(project_id, create_at, id) INCLUDE (list_item);

DROP INDEX jobs_by_status_items;
CREATE INDEX jobs_by_status_items ON jobs(project_id, status, create_at, id) INCLUDE (list_item);

DROP INDEX jobs_by_type_items;
CREATE INDEX jobs_by_type_items ON jobs(project_id, type, status, visible, create_at, id)
    INCLUDE (list_item);
