"""The data plane: what runs per connection, in each proxy worker (TCP) and in the main
process (DNS). Every egress decision is made here: addons/ (mitmproxy addons in pipeline
order), authorize.py (policy, then vetting the upstream address), dns.py, denials.py."""
