. /work/main/bench/lib.sh
for p in ${PATHS:-/webhook}; do
redis-cli -p "$rport" flushall >/dev/null
(sleep 4; top -b -n 1 -d 1 | head -14 | tail -8) > /tmp/top.$$ &
REPORTS=${R:-2000} PATH_=$p wrk -t1 -c${C:-32} -d${D:-8s} -s "$root/bench/report.lua" "http://127.0.0.1:$hport" | grep RESULT
wait
cat /tmp/top.$$
done
