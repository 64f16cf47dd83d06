-- Every profile read lists the person's identifiers (each send reads its recipient): with kind and value in the
-- index that is one index range instead of a range plus a table lookup per identifier (profiled: the lookups
-- were 7.7% of the messaging worker's CPU while sending a million emails).
CREATE INDEX identities_by_profile_kind ON identities(profile_id, kind, value);
DROP INDEX identities_by_profile;
