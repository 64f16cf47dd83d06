-- A message's profile index held `sent_at`, so marking a message sent moved its entry: the randomly placed page
-- that queueing had written (people are random with respect to time) was written again in a later commit. Only
-- sent messages are indexed now, from the moment they are sent, and their entries never move: frequency caps
-- read a person's sends of a channel since a time, and merges move a person's sent messages. A message still
-- in the queue keeps the profile it was queued for; the worker follows merges from it when it takes the message
-- out and records the person it went to.
DROP INDEX msg_messages_profile;
CREATE INDEX msg_messages_profile ON msg_messages (profile_id, channel, sent_at) WHERE sent_at IS NOT NULL;
