"""Approvals: requests an `ask` rule (or `on_unmatched: ask`) holds until a person decides.

A proxy worker asks the main process through the hub (`protocol.Approve`); the main
process's `ApprovalBook` keeps the pending approval in the database and in memory, tells the
webhook, and answers when someone allows or denies it through the API (CLI, web page, the
webhook's decision URL) or when its time is up.
"""
