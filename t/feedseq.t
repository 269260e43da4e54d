#!/usr/bin/perl
# The change feed on one Redis: every entry carries "seq", the message's
# count of status changes (1, 2, 3 ...); with tiktok_reports_stream_partitions
# P the entries go to <prefix>events:{p}, p = keyslot(message key) mod P;
# a hash an older version wrote (no "seq") continues from the changes its
# timeline shows.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use TikTokTest;

my $t = TikTokTest->new;
$t->start_redis;
$t->start_nginx(server => <<'EOF');
        location = /webhook {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location = /parts {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_key_prefix "p4:";
            tiktok_reports_stream_partitions 4;
        }
        location /status/ {
            tiktok_reports_status;
        }
EOF

sub post {
    my ($path, @results) = @_;
    my $r = $t->http(method => 'POST', path => $path,
                     headers => [ 'Content-Type' => 'application/json' ],
                     body => json_encode({ results => \@results }));
    return $r->{status} == 200 ? json_decode($r->{body}) : $r->{status};
}

# a stream's entries as "id status<previous seq", in order
sub feed {
    my ($key) = @_;
    my $entries = $t->redis('XRANGE', $key, '-', '+');
    return [ map {
        my %f = @{ $_->[1] };
        "$f{messageId} $f{status}<$f{previous} $f{seq}"
    } @$entries ];
}

my $id = "seq-$$";
my $pending = tiktok_dlr(id => $id, group => 'PENDING',
                         name => 'PENDING_ENROUTE', status_id => 7,
                         doneAt => '2023-09-26T10:52:15.100+0000');
my $delivered = tiktok_dlr(id => $id);
my $seen = tiktok_seen(id => $id);

# out of order and twice: seen first, then the rest
is_deeply(post('/webhook', $delivered), { accepted => 1, duplicates => 0,
                                          rejected => [] }, 'delivered');
is_deeply(post('/webhook', $delivered, $pending),
          { accepted => 1, duplicates => 1, rejected => [] },
          'delivered again and a late pending');
is_deeply(post('/webhook', $seen, $seen),
          { accepted => 1, duplicates => 1, rejected => [] }, 'seen twice');
is_deeply(feed('tiktok:events'), [ "$id DELIVERED< 1", "$id SEEN<DELIVERED 2" ],
          'two changes of status, seq 1 and 2; the late pending is none');
is($t->redis('HGET', "tiktok:msg:{$id}", 'seq'), 2, 'the hash keeps the last seq');
unlike($t->http(path => "/status/$id")->{body}, qr/"seq"|"q\d"/,
       'the lookup shows no bookkeeping');

# the whole life in order
my $id2 = "$id-b";
post('/webhook', tiktok_dlr(id => $id2, group => 'PENDING',
                            name => 'PENDING_ENROUTE', status_id => 7));
post('/webhook', tiktok_dlr(id => $id2));
post('/webhook', tiktok_seen(id => $id2));
is_deeply([ grep { /^\Q$id2 / } @{ feed('tiktok:events') } ],
          [ "$id2 PENDING< 1", "$id2 DELIVERED<PENDING 2", "$id2 SEEN<DELIVERED 3" ],
          'pending, delivered, seen: seq 1, 2, 3');

# a hash as the previous version wrote it: no seq, the timeline tells
{
    my $old = "$id-old";
    my $line = sub {
        my ($kind, $st, $at) = @_;
        return qq({"kind":"$kind",) . ($kind eq 'delivery' ? '"id":7,' : '')
            . qq("at":"$at","status":"$st","receivedAt":1});
    };
    $t->redis('HSET', "tiktok:msg:{$old}", 'status', 'DELIVERED',
              'timeline', join("\n",
                  $line->('delivery', 'PENDING', '2023-09-26T10:52:15.100+0000'),
                  $line->('delivery', 'UNDELIVERABLE', '2023-09-26T10:52:15.200+0000'),
                  $line->('delivery', 'PENDING', '2023-09-26T10:52:15.300+0000'),
                  $line->('delivery', 'DELIVERED', '2023-09-26T10:52:15.400+0000')),
              'updatedAt', 1);
    is_deeply(post('/webhook', tiktok_seen(id => $old)),
              { accepted => 1, duplicates => 0, rejected => [] },
              'seen on a hash without seq');
    is_deeply([ grep { /^\Q$old / } @{ feed('tiktok:events') } ],
              [ "$old SEEN<DELIVERED 4" ],
              'its seq continues from the three changes its timeline shows');
    is($t->redis('HGET', "tiktok:msg:{$old}", 'seq'), 4, 'and is kept');
}

# four partitions: each message's changes in the partition of its slot
{
    my @ids = map { "part-$$-$_" } 1 .. 40;
    is_deeply(post('/parts', map { tiktok_dlr(id => $_) } @ids),
              { accepted => 40, duplicates => 0, rejected => [] },
              '40 reports on four partitions');
    post('/parts', map { tiktok_seen(id => $_) } @ids);
    my %want;
    for my $m (@ids) {
        my $p = keyslot("p4:msg:{$m}") % 4;
        push @{ $want{$p} }, "$m DELIVERED< 1";
    }
    for my $m (@ids) {
        push @{ $want{ keyslot("p4:msg:{$m}") % 4 } }, "$m SEEN<DELIVERED 2";
    }
    for my $p (0 .. 3) {
        is_deeply(feed("p4:events:{$p}"), $want{$p} || [],
                  "partition $p holds its messages' changes, in order");
    }
    is($t->redis('EXISTS', 'p4:events'), 0, 'and no unpartitioned stream');
    ok(keys %want > 1, 'the messages spread over more than one partition');
}

# a partition that is not a stream fails the call before anything is written
{
    my $m = 'part-bad-' . $$;
    my $p = keyslot("p4:msg:{$m}") % 4;
    $t->redis('RENAME', "p4:events:{$p}", 'p4:saved');
    $t->redis('SET', "p4:events:{$p}", 'x');
    is(post('/parts', tiktok_dlr(id => $m)), 503,
       'a partition holding a string: 503');
    is($t->redis('EXISTS', "p4:msg:{$m}"), 0, '... and nothing written');
    $t->redis('DEL', "p4:events:{$p}");
    $t->redis('RENAME', 'p4:saved', "p4:events:{$p}");
    is_deeply(post('/parts', tiktok_dlr(id => $m)),
              { accepted => 1, duplicates => 0, rejected => [] },
              'the retry after the fix: stored');
    is_deeply([ grep { /^\Q$m / } @{ feed("p4:events:{$p}") } ],
              [ "$m DELIVERED< 1" ], '... and in its partition once');
}

# nginx -t: the partitions' range
for my $bad (0, 1025, 'x') {
    my ($rc, $out) = $t->nginx_test_conf(server => <<"EOF");
        location = /w {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_stream_partitions $bad;
        }
EOF
    isnt($rc, 0, "nginx -t refuses tiktok_reports_stream_partitions $bad");
    like($out, qr/value must be between 1 and 1024|"tiktok_reports_stream_partitions" directive invalid number/,
         '... saying why');
}

$t->stop_nginx;
$t->check_logs;

done_testing;
