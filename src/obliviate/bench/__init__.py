"""The benchmark with an oracle (issue 6): fictitious entities the base model cannot know."""
