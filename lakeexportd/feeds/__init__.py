"""The feed registry and FeedManager."""
