"""The installation-level webhook relay (`runnerfleet webhook-relay`): one organisation webhook
fanned out to every team's listener that watches the delivery's repository."""
