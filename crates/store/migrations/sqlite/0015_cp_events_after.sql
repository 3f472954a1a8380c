-- The outbox sequence number when each pipeline was created: events at or before it (a push
-- or an upload that committed before the pipeline existed) never start it, as an EventBridge
-- rule sees only the events after it is made.
ALTER TABLE cp_pipelines ADD COLUMN events_after INTEGER NOT NULL DEFAULT 0;
