"""Replica provisioners, chosen by ``provisioner.kind`` in DEPLOY.yaml."""
