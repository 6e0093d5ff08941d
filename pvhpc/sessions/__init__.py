"""The session core: a request checked into a spec, the job it becomes, its states, and the one writer of them."""
