"""Tools the agent calls on a repository; each is a small typed function usable on its own."""
