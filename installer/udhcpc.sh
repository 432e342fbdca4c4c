#!/bin/sh
# shellcheck shell=dash disable=SC2154 # udhcpc passes interface, ip, mask, router, dns in the environment
# busybox udhcpc's event script: configure the lease on the interface (address, route, DNS).
case $1 in
  bound | renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    for r in $router; do
      ip route replace default via "$r" dev "$interface"
      break
    done
    : >/etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
    ;;
  deconfig) ip addr flush dev "$interface" ;;
esac
exit 0
