-- Job names sort by their bytes, as on SQLite, whatever the cluster's default collation
-- (`sort_key=name` answers the same order on both backends). Names are ASCII, so lower()
-- and the trigram index mean the same under "C". Rebuilds the indexes on name.
ALTER TABLE jobs ALTER COLUMN name TYPE TEXT COLLATE "C";
