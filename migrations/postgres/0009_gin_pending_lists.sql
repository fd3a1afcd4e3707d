-- A GIN index takes new entries into a pending list that every search through it reads in
-- full, until a vacuum, or a list grown past gin_pending_list_limit (4 MB by default), moves
-- them into the index. Under steady creates the name indexes' lists grew to megabytes
-- between vacuums: after 10 s of single-row inserts (about 1,600/s from two clients), a
-- selective name search ran at some 400 statements/s instead of 5,500 (pgbench, two
-- clients, 400,000 jobs). At the least size a list may have, 64 kB, the searches kept
-- 4,500-5,400/s and the inserts lost nothing (1,650-1,680/s against 1,570-1,720/s;
-- without a pending list at all, 1,240-1,610/s).
ALTER INDEX jobs_name_grams SET (gin_pending_list_limit = 64);
ALTER INDEX jobs_name_trgm SET (gin_pending_list_limit = 64);
