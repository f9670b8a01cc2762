"""Everything that speaks to the broker: control commands, the event consumer, the feed."""
