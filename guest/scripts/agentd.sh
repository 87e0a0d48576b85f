#!/bin/sh
# kumo.script=agentd.sh: the guest agent after /init has loaded the stock kernel's virtio
# modules (rdinit=/sbin/kumo-probe would skip them). kumo-probe runs the kumo.probe= steps of
# the command line, e.g. kumo.probe=info,agentd, and becomes kumo-agent.
exec /sbin/kumo-probe
