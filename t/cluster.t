#!/usr/bin/perl
# Redis Cluster: "tiktok_reports_redis SEED… cluster;" against a real
# cluster of 3 masters and 3 replicas on loopback (t/lib/RedisCluster.pm).
# nginx -t refuses a database with cluster and connects nowhere; 300
# reports in bodies of 1, 7 and 100 are stored on the master of each
# message's slot, looked up one by one and in batches across the masters,
# and resent as duplicates; ids with braces are routed by Redis's hash-tag
# rule; the feed by partition (16 by default, 1, 3) and seq through a
# message's whole life; a slot half-migrated (ASK, TRYAGAIN) for message
# keys and for a feed partition, and the migration finished (MOVED); a
# first seed that runs nothing, and a seed that is not a cluster node (503,
# logged once); the cluster down (CLUSTERDOWN: 503 with Retry-After), then
# 200 again without restarting nginx.  Resharding and failover under load: t/cluster-moves.t.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);
use TikTokTest;
use RedisCluster;

my $vg = $ENV{TT_VALGRIND};
my $slow = $vg ? 3 : 1;
my $timeout = 2 * $slow;

my $t = TikTokTest->new;

# --- nginx -t: no database in cluster mode, and no connection ------------------

{
    my $conf = sub {
        my ($http, $loc) = @_;
        return (no_redis => 1, http => $http, server => <<"EOF");
        location = /webhook {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            $loc
        }
EOF
    };
    # a listener that must see no connection from nginx -t
    my $lport = TikTokTest::free_port();
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $lport,
                                  Listen => 16, ReuseAddr => 1) or die $!;
    my $seeds = "127.0.0.1:$lport 127.0.0.1:1 127.0.0.1:2";
    for my $c (
        [ 'db 1 with cluster', "tiktok_reports_redis $seeds cluster;\n"
          . "tiktok_reports_redis_db 1;", '' ],
        [ 'db 1 in http, cluster in the location',
          'tiktok_reports_redis_db 1;', "tiktok_reports_redis $seeds cluster;" ],
        [ 'cluster in http, db 2 in the location',
          "tiktok_reports_redis $seeds cluster;", 'tiktok_reports_redis_db 2;' ],
    ) {
        my ($rc, $out) = $t->nginx_test_conf($conf->(@$c[1, 2]));
        isnt($rc, 0, "nginx -t refuses $c->[0]");
        like($out, qr/tiktok_reports_redis_db/, "... naming tiktok_reports_redis_db")
            or diag($out);
    }
    my ($rc, $out) = $t->nginx_test_conf($conf->(
        "tiktok_reports_redis $seeds cluster;\ntiktok_reports_redis_db 0;\n"
        . "tiktok_reports_stream_partitions 16;\n"
        . "tiktok_reports_redis_wait 1 500ms;\ntiktok_reports_redis_timeout 2s;",
        ''));
    is($rc, 0, 'nginx -t takes seeds that do not run (db 0, partitions, wait)')
        or diag($out);
    ok(!IO::Select->new($l)->can_read(0.3), '... and connects to none of them');
    close $l;
}

# --- the cluster, and nginx --------------------------------------------------------

my $c = RedisCluster->new($t);
diag(sprintf 'cluster of 6 up in %.1f s', $c->started_in);
my @masters = $c->masters;
is(scalar @masters, 3, 'three masters');

# the first seed runs nothing: discovery goes on to the next
my $dead = TikTokTest::free_port();
my $seeds = "127.0.0.1:$dead " . $c->seeds;
# a plain Redis (not a cluster node) as the only seed of one location
$t->start_redis;
my $plain = $t->redis_port;
$t->start_nginx(no_redis => 1, http => <<"EOF", server => <<"EOF2");
    tiktok_reports_redis $seeds cluster;
    tiktok_reports_redis_timeout ${timeout}s;
EOF
        client_max_body_size 16m;
        client_body_buffer_size 16m;
        location = /webhook {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location = /webhook-one {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_key_prefix "one:";
            tiktok_reports_stream_partitions 1;
        }
        location = /webhook-three {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_key_prefix "three:";
            tiktok_reports_stream_partitions 3;
        }
        location /status/ {
            tiktok_reports_status;
        }
        location = /not-a-cluster {
            tiktok_reports_redis 127.0.0.1:$plain cluster;
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
EOF2

# --- reports, and what the module should have made of them -------------------------

my %EV = (
    pending   => sub { tiktok_dlr(id => $_[0], group => 'PENDING',
                                  status_id => 7, name => 'PENDING_ENROUTE',
                                  doneAt => '2023-09-26T10:52:10.000+0000') },
    delivered => sub { tiktok_dlr(id => $_[0]) },
    seen      => sub { tiktok_seen(id => $_[0]) },
);
my %STATUS = (pending => 'PENDING', delivered => 'DELIVERED', seen => 'SEEN');
my %RANK = (pending => 1, delivered => 3, seen => 4);
my %AT = (pending => '2023-09-26T10:52:10.000+0000',
          delivered => '2023-09-26T10:52:15.799+0000',
          seen => '2019-11-09T16:00:05.000+0000');

# per prefix and id: the changes of status the feed must show, in order,
# as [previous, status, at]; and the events seen (for duplicates)
my (%CHANGES, %SEEN_EV);

sub expect_event {
    my ($prefix, $kind, $id) = @_;
    my $ch = $CHANGES{$prefix}{$id} ||= [];
    my $cur = @$ch ? $ch->[-1][1] : undef;
    if (!defined $cur || $RANK{$kind} > $RANK{ lc $cur }) {
        push @$ch, [ $cur // '', $STATUS{$kind}, $AT{$kind} ];
    }
}

sub status_of {
    my ($prefix, $id) = @_;
    my $ch = $CHANGES{$prefix}{$id} or return undef;
    return $ch->[-1][1];
}

# POST [kind, id] pairs to a location; the answer (status 'none' if none)
sub post {
    my ($path, @ev) = @_;
    my $r = eval {
        $t->http(method => 'POST', path => $path, timeout => 10 * $slow + 10,
                 headers => [ 'Content-Type' => 'application/json' ],
                 body => json_encode({ results => [ map { $EV{ $_->[0] }->($_->[1]) } @ev ] }));
    };
    return $r || { status => 'none', body => '', headers => {} };
}

my %PREFIX = ('/webhook' => 'tiktok:', '/webhook-one' => 'one:',
              '/webhook-three' => 'three:');

# posts and checks the answer: every report accepted, or with dup => 1
# every one a duplicate; the model learns the events of a 200
sub post_ok {
    my ($name, $path, @ev) = @_;
    my $r = post($path, @ev);
    my $n = @ev;
    my $new = grep { !$SEEN_EV{$path}{"$_->[0] $_->[1]"}++ } @ev;
    my $want = { accepted => $new, duplicates => $n - $new, rejected => [] };
    my $got = eval { json_decode($r->{body}) };
    my $ok = is_deeply([ $r->{status}, $got ], [ 200, $want ], $name);
    diag("$r->{status} $r->{body}") unless $ok;
    expect_event($PREFIX{$path}, @$_) for @ev;
    return $ok;
}

sub msg_key { "$_[0]msg:{$_[1]}" }

# --- 300 reports over the three masters --------------------------------------------

my @ids = map { "cl-$$-$_" } 1 .. 300;
my %kind_of = map { $ids[$_] => (qw(pending delivered seen))[$_ % 3] } 0 .. $#ids;
my @bodies;
{
    my @left = @ids;
    for my $size (100, 7, 1, 100, (7) x 11, (1) x 9, 7) {
        push @bodies, [ splice @left, 0, $size ];
    }
    die "bodies: " . scalar(@left) . " ids left" if @left;
}
{
    my %per;
    $per{ $c->node_for_key(msg_key('tiktok:', $_))->port }++ for @ids;
    is(scalar keys %per, 3, 'the 300 ids spread over the three masters')
        or diag(explain \%per);

    my $bad = 0;
    for my $b (@bodies) {
        post_ok('a body of ' . scalar(@$b) . ' reports: 200, all accepted', '/webhook',
                map { [ $kind_of{$_}, $_ ] } @$b) or $bad++;
    }
    is($bad, 0, scalar(@bodies) . ' bodies of 1, 7 and 100 reports: all 200');

    my @wrong;
    for my $id (@ids) {
        my $node = $c->node_for_key(msg_key('tiktok:', $id));
        my $st = eval { $node->cmd('HGET', msg_key('tiktok:', $id), 'status') };
        push @wrong, "$id: " . ($st // $@ // 'nil')
            unless ($st // '') eq $STATUS{ $kind_of{$id} };
    }
    is(scalar @wrong, 0, 'each hash on the master serving its slot, with its status')
        or diag(join "\n", @wrong[0 .. ($#wrong > 9 ? 9 : $#wrong)]);

    # the same bodies again: duplicates only
    my @dups = grep { my $b = $_; !post_ok('resent body: all duplicates', '/webhook',
                      map { [ $kind_of{$_}, $_ ] } @$b) } @bodies[0 .. 3];
    is(scalar @dups, 0, 'resent bodies: every report a duplicate');
}

# ids with braces: Redis's hash-tag rule on the whole key, not the id alone
{
    my @odd = ("br{x}-$$", "br{}-$$", "{br-$$", "}br{-$$", "br{{x}}-$$",
               "br-$$-{a}{b}", "{}br-$$");
    post_ok('ids with braces: 200', '/webhook', map { [ 'delivered', $_ ] } @odd);
    for my $id (@odd) {
        my $key = msg_key('tiktok:', $id);
        my $node = $c->node_for_slot($masters[0]->cmd('CLUSTER', 'KEYSLOT', $key));
        is(eval { $node->cmd('HGET', $key, 'status') }, 'DELIVERED',
           "id '$id': on the master of CLUSTER KEYSLOT's slot");
    }
}

# --- lookups -----------------------------------------------------------------------------

sub check_results {
    my ($name, $r, @want) = @_;
    my $j = eval { json_decode($r->{body}) };
    unless (is($r->{status}, 200, "$name: 200") && $j && ref $j->{results} eq 'ARRAY') {
        diag(substr($r->{body}, 0, 300));
        return;
    }
    is_deeply([ map { $_->{messageId} } @{ $j->{results} } ], \@want,
              "$name: every id, in request order");
    my @bad;
    for my $i (0 .. $#want) {
        my $res = $j->{results}[$i] || {};
        my $st = status_of('tiktok:', $want[$i]);
        if (defined $st) {
            push @bad, "$want[$i]: " . json_encode($res)
                if (ref $res->{found} && !$res->{found})
                   || ($res->{status} // '') ne $st;
        } else {
            push @bad, "$want[$i]: " . json_encode($res)
                unless ref $res->{found} && !$res->{found};
        }
    }
    is(scalar @bad, 0, "$name: statuses right, unknown ids found:false")
        or diag(join "\n", @bad[0 .. ($#bad > 5 ? 5 : $#bad)]);
}

{
    # single lookups: ten ids on each master, and an unknown one
    my %per;
    for my $id (@ids) {
        my $p = $c->node_for_key(msg_key('tiktok:', $id))->port;
        push @{ $per{$p} }, $id if @{ $per{$p} || [] } < ($vg ? 3 : 10);
    }
    my @bad;
    for my $id (map { @$_ } values %per) {
        my $r = $t->http(path => "/status/$id");
        my $j = eval { json_decode($r->{body}) } || {};
        push @bad, "$id: $r->{status} $r->{body}"
            unless $r->{status} == 200 && ($j->{messageId} // '') eq $id
                   && ($j->{status} // '') eq $STATUS{ $kind_of{$id} };
    }
    is(scalar @bad, 0, 'single lookups on every master: 200 with the status')
        or diag(join "\n", @bad);
    my $r = $t->http(path => "/status/cl-$$-unknown");
    is($r->{status}, 404, 'single lookup of an unknown id: 404');
    is_deeply(eval { json_decode($r->{body}) },
              { error => 'unknown messageId', messageId => "cl-$$-unknown" },
              '... with its id');

    # GET batch: 60 ids across the masters, unknown ones between them
    my @q = map { ($ids[$_ * 5], "cl-$$-none-$_") } 0 .. 29;
    $r = $t->http(path => '/status/?' . join '&', map { "id=$_" } @q);
    check_results('GET batch of 60 over three masters', $r, @q);

    # POST batch: 1000 ids, every known one and 700 unknown, shuffled
    my @all = ((map { "cl-$$-nope-$_" } 1 .. 700), @ids);
    srand 7;
    for my $i (reverse 1 .. $#all) {
        my $j = int rand($i + 1);
        @all[$i, $j] = @all[$j, $i];
    }
    $r = $t->http(method => 'POST', path => '/status/', timeout => 30 * $slow,
                  headers => [ 'Content-Type' => 'application/json' ],
                  body => json_encode({ ids => \@all }));
    check_results('POST batch of 1000 over three masters', $r, @all);
}

# --- the feed ----------------------------------------------------------------------------

# every entry of every partition of a prefix's feed, read from the nodes
# serving them: { id => [ [partition, {fields}], … ] }
sub read_feed {
    my ($prefix, $P) = @_;
    my %by;
    for my $p (0 .. $P - 1) {
        my $key = $P == 1 ? "${prefix}events" : "${prefix}events:{$p}";
        my $entries = $c->cmd_for_key($key, 'XRANGE', $key, '-', '+') || [];
        for my $e (@$entries) {
            my %f = @{ $e->[1] };
            push @{ $by{ $f{messageId} // '' } }, [ $p, \%f ];
        }
    }
    return \%by;
}

# the feed of these ids against the model: each in its partition, every
# field there, seq 1..n without a gap, repeats only of the same change
sub check_feed {
    my ($name, $prefix, $P, @ids) = @_;
    my $feed = read_feed($prefix, $P);
    my (@bad, $repeats);
    for my $id (@ids) {
        my $want = $CHANGES{$prefix}{$id} || [];
        my $part = RedisCluster::keyslot(msg_key($prefix, $id)) % $P;
        my %by_seq;
        for my $e (@{ $feed->{$id} || [] }) {
            my ($p, $f) = @$e;
            push @bad, "$id: in partition $p, not $part" if $p != $part;
            my @missing = grep { !defined $f->{$_} }
                          qw(messageId status previous at seq);
            push @bad, "$id: no @missing" if @missing;
            my $s = $f->{seq} // 'none';
            my $what = join '|', map { $_ // '' } @$f{qw(previous status at)};
            if (exists $by_seq{$s}) {
                $repeats++;
                push @bad, "$id: seq $s twice, different: $by_seq{$s} / $what"
                    if $by_seq{$s} ne $what;
            }
            $by_seq{$s} = $what;
        }
        my @want = map { join '|', @$_ } @$want;
        my @got = map { $by_seq{$_} // 'missing' } 1 .. @want;
        push @bad, "$id: seq 1.." . @want . ": [@got], not [@want]"
            unless "@got" eq "@want";
        my @extra = grep { !/^\d+$/ || $_ < 1 || $_ > @want } keys %by_seq;
        push @bad, "$id: unexpected seq @extra" if @extra;
    }
    is(scalar @bad, 0, "$name: every change in its partition, seq 1, 2, … "
                       . "without a gap") or diag(join "\n", @bad[0 .. ($#bad > 9 ? 9 : $#bad)]);
    diag("$name: $repeats repeated entries (at least once)") if $repeats;
}

check_feed('feed of the 300 (16 partitions by default)', 'tiktok:', 16, @ids);
{
    my %used;
    my $feed = read_feed('tiktok:', 16);
    for my $id (@ids) {
        $used{ $_->[0] }++ for @{ $feed->{$id} || [] };
    }
    is(scalar keys %used, 16, '... all 16 partitions used');
    my %nodes;
    $nodes{ $c->node_for_key("tiktok:events:{$_}")->port }++ for 0 .. 15;
    is(scalar keys %nodes, 3, '... on all three masters');
}

# a message's whole life, out of order and twice, on 1, 3 and 16 partitions
{
    my @orders = (
        [qw(pending delivered seen)],
        [qw(pending pending delivered delivered seen seen)],
        [qw(delivered pending seen delivered seen)],
        [qw(seen pending delivered)],
        [qw(pending seen delivered pending)],
    );
    for my $path ('/webhook', '/webhook-one', '/webhook-three') {
        my $prefix = $PREFIX{$path};
        my $P = { '/webhook' => 16, '/webhook-one' => 1, '/webhook-three' => 3 }->{$path};
        my @life = map { "life-$$-$prefix$_" } 1 .. ($vg ? 5 : 20);
        my $bad = 0;
        # round r: the r-th event of every id, the ids in one body
        for my $r (0 .. 5) {
            my @ev = map { [ $orders[$_ % @orders][$r], $life[$_] ] }
                     grep { defined $orders[$_ % @orders][$r] } 0 .. $#life;
            post_ok("$path round $r", $path, @ev) or $bad++ if @ev;
        }
        # and once more, each report in a body of its own
        for my $i (0 .. ($vg ? 1 : 4)) {
            my $o = $orders[$i % @orders];
            post_ok("$path again, alone", $path, [ $_, $life[$i] ]) or $bad++
                for @$o;
        }
        is($bad, 0, "$path: every body of the lives 200");
        my @wrong = grep {
            ($c->cmd_for_key(msg_key($prefix, $_), 'HGET', msg_key($prefix, $_),
                             'status') // '') ne status_of($prefix, $_)
        } @life;
        is(scalar @wrong, 0, "$path: final statuses") or diag("@wrong");
        check_feed("$path: feed of $P partition(s)", $prefix, $P, @life);
    }
    my $one = $c->cmd_for_key('one:events', 'XLEN', 'one:events');
    ok($one > 0, "partitions 1: the feed is one:events ($one entries)");
    is($c->cmd_for_key('one:events:{0}', 'EXISTS', 'one:events:{0}'), 0,
       '... and not one:events:{0}');
    my $three = 0;
    $three += $c->cmd_for_key("three:events:{$_}", 'XLEN', "three:events:{$_}")
        for 0 .. 2;
    ok($three > 0 && !$c->cmd_for_key('three:events:{3}', 'EXISTS', 'three:events:{3}'),
       "partitions 3: three:events:{0..2} ($three entries)");
}

# --- a slot half-migrated: ASK and TRYAGAIN -----------------------------------------

{
    my ($from, $to) = @masters[0, 1];
    # eight fresh ids in one slot of the first master
    my ($anchor) = $c->names_in($from, 1, "ask-$$-", 'tiktok:msg:{%s}');
    my $slot = RedisCluster::keyslot(msg_key('tiktok:', $anchor));
    my @k = $c->names_in([$slot], 8, "ask-$$-", 'tiktok:msg:{%s}');
    my @keys = map { msg_key('tiktok:', $_) } @k;

    post_ok('slot to migrate: four messages PENDING', '/webhook',
            map { [ 'pending', $_ ] } @k[0 .. 3]);
    my $before = $c->errorstats($from, $to);
    ok($c->migrate_slot_partially($slot, $from, $to, @keys[0, 1]),
       "slot $slot half-migrated, two of its four keys moved");
    is(join('', map { $c->holds($to, $_) } @keys[0 .. 3])
       . join('', map { $c->holds($from, $_) } @keys[0 .. 3]), '11000011',
       '... two keys on each side');

    # all eight in one body: on the source two keys, on the target two,
    # four nowhere yet
    post_ok('half-migrated slot: one body for all eight ids', '/webhook',
            map { [ 'delivered', $_ ] } @k);
    # and each alone
    post_ok('half-migrated slot: a report alone', '/webhook', [ 'seen', $_ ])
        for @k[0, 2, 4];

    my $after = $c->errorstats($from, $to);
    my $redirs = ($after->{ASK} // 0) - ($before->{ASK} // 0)
               + ($after->{TRYAGAIN} // 0) - ($before->{TRYAGAIN} // 0);
    ok($redirs > 0, "the cluster answered ASK or TRYAGAIN ($redirs times)")
        or diag(explain $before, $after);

    my @bad;
    for my $i (0 .. $#k) {
        my @on = grep { $c->holds($_, $keys[$i]) } @masters;
        push @bad, "$k[$i]: on " . scalar(@on) . ' nodes' if @on != 1;
        my $st = $c->cmd_for_key($keys[$i], 'HGET', $keys[$i], 'status') // 'nil';
        push @bad, "$k[$i]: $st" if $st ne status_of('tiktok:', $k[$i]);
    }
    is(scalar @bad, 0, 'during the migration: each message on one side only, '
                       . 'with its status') or diag(join "\n", @bad);
    is(scalar(grep { $c->holds($to, $_) } @keys[4 .. 7]), 4,
       '... the new ones on the target');

    my $r = $t->http(method => 'POST', path => '/status/',
                     headers => [ 'Content-Type' => 'application/json' ],
                     body => json_encode({ ids => [ @k, "ask-$$-none" ] }));
    check_results('batch lookup across the half-migrated slot', $r, @k, "ask-$$-none");
    for my $id (@k[0, 2, 4]) {
        $r = $t->http(path => "/status/$id");
        is($r->{status}, 200, "single lookup of $id during the migration");
    }

    ok($c->finish_migration($slot, $from, $to), 'migration finished');
    is($to->cmd('EXISTS', @keys), 8, '... all eight on the target');
    # the module's map still names the source: MOVED
    post_ok('after the migration: the same body, duplicates', '/webhook',
            map { [ 'delivered', $_ ] } @k);
    post_ok('after the migration: a new event', '/webhook',
            map { [ 'seen', $_ ] } @k[1, 3, 5, 6, 7]);
    @bad = grep { ($to->cmd('HGET', $keys[$_], 'status') // '') ne 'SEEN' } 0 .. 7;
    is(scalar @bad, 0, '... stored on the target') or diag("@k[@bad]");
    $r = $t->http(method => 'POST', path => '/status/',
                  headers => [ 'Content-Type' => 'application/json' ],
                  body => json_encode({ ids => \@k }));
    check_results('batch lookup after the migration', $r, @k);
    check_feed('feed of the migrated slot', 'tiktok:', 16, @k);
}

# a feed partition's stream half-migrated: XADD meets ASK
{
    my $p = 5;
    my $stream = "tiktok:events:{$p}";
    my $slot = RedisCluster::keyslot($stream);
    my $from = $c->node_for_slot($slot);
    my ($to) = grep { $_ != $from } $c->masters;
    ok($from->cmd('EXISTS', $stream), "partition $p exists on its master");
    my $len = $from->cmd('XLEN', $stream);
    $c->migrate_slot_partially($slot, $from, $to, $stream);
    ok($c->holds($to, $stream) && !$c->holds($from, $stream),
       "partition ${p}'s stream moved, its slot half-migrated");

    # fresh ids of that partition, on any master
    my @f;
    for (my $n = 1; @f < 6; $n++) {
        my $id = "fp-$$-$n";
        push @f, $id if RedisCluster::keyslot(msg_key('tiktok:', $id)) % 16 == $p;
    }
    post_ok('partition half-migrated: 200', '/webhook', map { [ 'pending', $_ ] } @f);
    post_ok('partition half-migrated: alone', '/webhook', [ 'delivered', $f[0] ]);
    $to->cmd('ASKING');
    my $now = $to->cmd('XLEN', $stream);
    ok($now >= $len + 7, "... the entries went to the target ($len, then $now)");
    ok(!$c->holds($from, $stream), '... and no new stream on the source');
    check_feed('feed during the partition\'s migration', 'tiktok:', 16, @f);
    ok($c->finish_migration($slot, $from, $to), 'partition migration finished');
    post_ok('partition moved: 200', '/webhook', map { [ 'seen', $_ ] } @f);
    check_feed('feed after the partition\'s migration', 'tiktok:', 16, @f);
}

# --- a seed that is not a cluster node -------------------------------------------

{
    my @st = map { my $r = post('/not-a-cluster', [ 'delivered', "plain-$$-$_" ]);
                   sleep 0.3; $r->{status} } 1 .. 4;
    ok(!grep({ $_ ne '503' } @st), 'a seed that is not a cluster node: 503')
        or diag("@st");
    my @err = grep { /\[error\]/ && /127\.0\.0\.1:$plain/ } split /\n/, $t->error_log;
    is(scalar @err, 1, '... logged once at error, naming the seed')
        or diag(join "\n", @err);
    is($t->redis('DBSIZE'), 0, '... and nothing written to it');
}

# --- CLUSTERDOWN ----------------------------------------------------------------------

{
    my @d = map { "down-$$-$_" } 1 .. 3;
    ok($c->cluster_down('slot'), 'the cluster down (a slot unassigned)')
        or diag($c->why);
    my $t0 = time;
    my $r = post('/webhook', [ 'delivered', $d[0] ]);
    my $took = time - $t0;
    is($r->{status}, 503, 'CLUSTERDOWN: 503');
    is($r->{body}, '{"error":"status store unavailable"}', '... the error body');
    ok($r->{headers}{'retry-after'}, '... with Retry-After');
    ok($took < $timeout + 1.5 * $slow, sprintf('... within the timeout (%.1f s)', $took));
    $r = $t->http(path => "/status/$ids[0]", timeout => 20 * $slow);
    is($r->{status}, 503, 'lookup while down: 503');

    ok($c->cluster_up, 'the cluster up again') or diag($c->why);
    my ($ok, $tries) = (0, 0);
    my $until = time + 15 * $slow;
    while (time < $until) {
        $tries++;
        $r = post('/webhook', [ 'delivered', $d[1] ]);
        if ($r->{status} eq '200') { $ok = 1; last }
        sleep 0.2;
    }
    ok($ok, "200 again without restarting nginx ($tries tries)");
    $SEEN_EV{'/webhook'}{"delivered $d[1]"} = 1;
    expect_event('tiktok:', 'delivered', $d[1]);
    post_ok('after CLUSTERDOWN: a body over all masters', '/webhook',
            (map { [ 'delivered', $_ ] } $d[0], $d[2]),
            map { [ 'seen', $_ ] } @ids[0 .. 20]);
    is($c->cmd_for_key(msg_key('tiktok:', $d[0]), 'HGET', msg_key('tiktok:', $d[0]),
                       'status'), 'DELIVERED', '... stored');
    is($t->http(path => "/status/$d[0]")->{status}, 200, '... and found');
    check_feed('feed after CLUSTERDOWN', 'tiktok:', 16, @d, @ids[0 .. 20]);
}

# --- small calls joined per master -----------------------------------------
#
# 30 bodies of one report, read in one event loop iteration (the worker
# stopped while they are sent): one call per master, not 30.

{
    my $calls = sub {
        my $n = 0;
        for my $m ($c->masters) {
            $n += $1 if $m->cmd('INFO', 'commandstats') =~ /cmdstat_evalsha:calls=(\d+)/;
        }
        return $n;
    };
    my @ids = map { "join-$$-$_" } 1 .. 30;
    my @socks = map {
        my $body = json_encode({ results => [ tiktok_dlr(id => $_) ] });
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $t->http_port, Proto => 'tcp')
            or die "connect: $!";
        [ $s, "POST /webhook HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
              . "Content-Type: application/json\r\n"
              . 'Content-Length: ' . length($body) . "\r\n\r\n$body" ];
    } @ids;
    sleep($vg ? 2 : 0.3);
    my ($worker) = $t->worker_pids;
    my $before = $calls->();
    kill 'STOP', $worker;
    print { $_->[0] } $_->[1] for @socks;
    sleep 0.2;
    kill 'CONT', $worker;
    my $ok = 0;
    for my $r (@socks) {
        my ($s) = @$r;
        my $raw = '';
        my $sel = IO::Select->new($s);
        my $until = time + 10 * $slow;
        while (time < $until && $sel->can_read($until - time)) {
            sysread($s, $raw, 65536, length $raw) or last;
        }
        $ok++ if $raw =~ /\{"accepted":1,"duplicates":0,"rejected":\[\]\}$/;
    }
    is($ok, 30, 'thirty one-report bodies at once: each accepted');
    my $n = $calls->() - $before;
    cmp_ok($n, '<=', 6, "... in $n calls over the three masters, not 30");
    is(scalar(grep { ($c->cmd_for_key(msg_key('tiktok:', $_), 'HGET',
                                      msg_key('tiktok:', $_), 'status') // '')
                     eq 'DELIVERED' } @ids), 30, '... all stored');
}

# --- an error inside the call is an error, not "not here" ------------------
#
# A user that may not HMGET: the call fails at once (503), it is not sent
# again and again as if its key had moved.

{
    $_->cmd('ACL', 'SETUSER', 'nohmget', 'on', '>pw', '~*', '&*', '+@all', '-hmget')
        for $c->live;
    my $n2 = TikTokTest->new;
    $n2->start_nginx(no_redis => 1, server => <<"EOF");
        location = /webhook {
            tiktok_reports_redis @{[ $c->seeds ]} cluster;
            tiktok_reports_redis_password nohmget pw;
            tiktok_reports_redis_timeout ${timeout}s;
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
EOF
    my $calls = sub {
        my $n = 0;
        for my $m ($c->masters) {
            $n += $1 if $m->cmd('INFO', 'commandstats') =~ /cmdstat_evalsha:calls=(\d+)/;
        }
        return $n;
    };
    # the first answer may wait for the slot map
    $n2->http(method => 'POST', path => '/webhook',
              headers => [ 'Content-Type' => 'application/json' ],
              body => json_encode({ results => [ tiktok_dlr(id => "acl-0-$$") ] }));
    my $before = $calls->();
    my $r = $n2->http(method => 'POST', path => '/webhook',
                      headers => [ 'Content-Type' => 'application/json' ],
                      body => json_encode({ results => [ tiktok_dlr(id => "acl-$$") ] }));
    is($r->{status}, 503, 'a user that may not HMGET: 503');
    cmp_ok($calls->() - $before, '<=', 2, '... after one call, not sent again and again');
    like($n2->error_log, qr/redis transition failed: .*can't run this command/,
         '... logged with the reason');
    $n2->stop_nginx;
    $n2->check_logs;
}

# --- a partition that is not a stream: the change waits in the hash -------
#
# Whether the partition lives on the message's own master (its entry made
# in the same call, failing there) or on another (added after the call):
# 503 while the partition is broken, the change kept as "q<seq>" in the
# hash; once fixed, the retry (a duplicate) publishes it, and the field goes.

for my $where ('same', 'other') {
    my ($id, $stream);
    for my $n (1 .. 2000) {
        my $cand = "part-$where-$$-$n";
        my $p = keyslot(msg_key('tiktok:', $cand)) % 16;
        my $s = "tiktok:events:{$p}";
        my $same = $c->node_for_key($s)->port == $c->node_for_key(msg_key('tiktok:', $cand))->port;
        if ($same == ($where eq 'same')) {
            ($id, $stream) = ($cand, $s);
            last;
        }
    }
    ok($id, "an id whose partition is on the $where master");
    my $key = msg_key('tiktok:', $id);
    $c->cmd_for_key($stream, 'RENAME', $stream, "$stream-saved")
        if $c->cmd_for_key($stream, 'EXISTS', $stream);
    $c->cmd_for_key($stream, 'SET', $stream, 'not a stream');
    my $r = post('/webhook', [ 'delivered', $id ]);
    is($r->{status}, 503, "$where master: a partition that is not a stream: 503");
    is($c->cmd_for_key($key, 'HGET', $key, 'q1'), 'DELIVERED  2023-09-26T10:52:15.799+0000',
       '... the change kept in the hash as q1');
    $c->cmd_for_key($stream, 'DEL', $stream);
    $c->cmd_for_key($stream, 'RENAME', "$stream-saved", $stream)
        if $c->cmd_for_key($stream, 'EXISTS', "$stream-saved");
    $r = post('/webhook', [ 'delivered', $id ]);
    is($r->{status}, 200, '... fixed: the retry answers 200');
    is_deeply(json_decode($r->{body}), { accepted => 0, duplicates => 1, rejected => [] },
              '... as a duplicate');
    my $entries = $c->cmd_for_key($stream, 'XRANGE', $stream, '-', '+');
    my @mine = grep { my %f = @{ $_->[1] }; $f{messageId} eq $id } @$entries;
    is(scalar @mine, 1, '... and its change is in the feed once');
    my $gone;
    for (1 .. 50) {
        $gone = !$c->cmd_for_key($key, 'HEXISTS', $key, 'q1');
        last if $gone;
        sleep 0.05;
    }
    ok($gone, '... and q1 is gone from the hash');
}

$t->stop_nginx;
$t->check_logs;

done_testing;
