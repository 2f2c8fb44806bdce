-- Expand only: which interface made each change (rest, graphql, apply), next to who and
-- when. Old rows get 'unknown'; a node of the previous release ignores the column.
ALTER TABLE policy_changes ADD COLUMN via TEXT NOT NULL DEFAULT 'unknown';
