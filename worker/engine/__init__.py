"""The worker's side of the queue protocol, and its loop: claim, admit, run, finish, renew, stop."""
