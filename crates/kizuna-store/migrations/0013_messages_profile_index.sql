-- A message's `sent_at` was in its profile index, so marking a message sent moved its entry: a second write, in a
-- later commit, of the same randomly placed index page that queueing it had written (profiles are random with
-- respect to time). Frequency caps read a person's few messages of a channel and check `sent_at` on the rows;
-- merges move a person's messages by `profile_id`. Neither needs `sent_at` in the index.
DROP INDEX msg_messages_profile;
CREATE INDEX msg_messages_profile ON msg_messages (profile_id, channel);
