"""evalq.leaderboard: the static site rendered from the results database."""
