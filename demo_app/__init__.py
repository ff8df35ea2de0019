"""The resilience_mw demo: a live failover and degradation dashboard (python -m demo_app)."""
