#!/usr/bin/perl
# A check of t/lib/RedisCluster.pm itself, run by hand (not part of the
# suite: it tests the harness, not the module, and takes half a minute):
#
#   TMPDIR=/some/tmp perl t/lib/cluster-selfcheck.pl
#
# keyslot() against CLUSTER KEYSLOT on 1000 random keys and the hash-tag
# edge cases; cmd_for_key; the error replies a half-migrated slot, a
# cluster down and a script touching a key elsewhere really give (printed
# with diag: these are the exact strings a client sees); finish_migration,
# cluster_down/up both ways, a reshard by redis-cli, a master killed and
# its replica promoted, and the killed node back as a replica.

use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use Test::More;
use Time::HiRes qw(time sleep);
use TikTokTest;
use RedisCluster;

my $t = TikTokTest->new;
my $c = RedisCluster->new($t);
diag(sprintf 'cluster up in %.1f s: %s', $c->started_in, $c->seeds(6));

my @m = $c->masters;
my @r = $c->replicas;
is(scalar @m, 3, 'three masters');
is(scalar @r, 3, 'three replicas');
for my $m (@m) {
    ok($c->replica_of($m), "master $m->{port} has a replica");
}
my $seed = $m[0];

# --- keyslot -------------------------------------------------------------------
{
    my @keys = ('', '{', '}', '{}', '}{', '{}{a}', '{a}', 'a{b}c', '{a}{b}',
                '{{a}}', '{a', 'a}', '}{a}', 'x{}y{z}', '{ }', "{\0}",
                '{user1000}.following', 'foo{}{bar}', 'foo{{bar}}zap',
                'foo{bar}{zap}', "\x{e9}t\x{e9}", 'tiktok:msg:{x}',
                'tiktok:events:{0}', '123456789');
    for (1 .. 1000 - @keys) {
        my $len = int rand 20;
        my @alphabet = ('a' .. 'e', '{', '}', ':', "\0", "\r", "\n", "\xff");
        push @keys, join '', map { $alphabet[rand @alphabet] } 1 .. $len;
    }
    my @bad;
    for my $k (@keys) {
        my $bytes = $k;
        utf8::encode($bytes) if utf8::is_utf8($bytes);
        my $want = $seed->cmd('CLUSTER', 'KEYSLOT', $bytes);
        push @bad, "'$k': $want vs " . RedisCluster::keyslot($k)
            if $want != RedisCluster::keyslot($k);
    }
    is(scalar @bad, 0, 'keyslot = CLUSTER KEYSLOT on ' . scalar(@keys) . ' keys')
        or diag(join "\n", @bad[0 .. ($#bad > 9 ? 9 : $#bad)]);
    is(TikTokTest::crc16('123456789'), 0x31c3, 'CRC16-XMODEM check value');
}

# --- routing ---------------------------------------------------------------------
{
    my %on;
    for my $i (1 .. 60) {
        my $k = "rt-$i";
        is($c->cmd_for_key($k, 'SET', $k, $i), 'OK', "SET $k") if $i == 1;
        $c->cmd_for_key($k, 'SET', $k, $i) unless $i == 1;
        $on{ $c->holder($k)->port }++;
        is($c->node_for_key($k)->cmd('GET', $k), $i, "$k on node_for_key")
            if $i <= 3;
    }
    is(scalar keys %on, 3, 'keys spread over the three masters');
    # a wrong node answers MOVED; cmd_for_key follows it from anywhere
    my $k = 'rt-1';
    my ($other) = grep { $_ != $c->node_for_key($k) } @m;
    eval { $other->cmd('GET', $k) };
    diag("MOVED: $@");
    like($@, qr/^redis error: MOVED \d+ 127\.0\.0\.1:\d+$/m, 'MOVED from another master');
}

# --- a slot half-migrated: ASK, TRYAGAIN, scripts ---------------------------------
my $slot;
{
    my ($from, $to) = @m[0, 1];
    my @names = $c->names_in([ $c->slots_served($from) ], 1, 'hm-');
    $slot = RedisCluster::keyslot($names[0]);
    my @k = $c->names_in([$slot], 5, 'hm-');
    $from->cmd('SET', $_, "v-$_") for @k[0 .. 3];
    # a key of the same node, another slot; and a key of another node
    my ($same) = grep { RedisCluster::keyslot($_) != $slot }
                 $c->names_in($from, 2, 'same-');
    $from->cmd('SET', $same, 1);
    my ($far) = $c->names_in($m[2], 1, 'far-');
    $m[2]->cmd('SET', $far, 1);
    ok($c->migrate_slot_partially($slot, $from, $to, @k[0, 1]),
       "slot $slot half-migrated from $from->{port} to $to->{port}");

    my %err;
    for my $try (
        [ 'GET moved key on source', $from, 0, 'GET', $k[0] ],
        [ 'GET kept key on source', $from, 0, 'GET', $k[2] ],
        [ 'MGET moved+kept on source', $from, 0, 'MGET', $k[0], $k[2] ],
        [ 'MGET two moved on source', $from, 0, 'MGET', $k[0], $k[1] ],
        [ 'SET new key on source', $from, 0, 'SET', $k[4], 'x' ],
        [ 'GET moved key on target', $to, 0, 'GET', $k[0] ],
        [ 'ASKING GET moved key on target', $to, 1, 'GET', $k[0] ],
        [ 'ASKING MGET moved+kept on target', $to, 1, 'MGET', $k[0], $k[2] ],
        [ 'ASKING MGET two moved on target', $to, 1, 'MGET', $k[0], $k[1] ],
        [ 'EVAL 1 moved key on source', $from, 0, 'EVAL',
          'return redis.call("GET", KEYS[1])', 1, $k[0] ],
        [ 'EVAL 2 keys moved+kept on source', $from, 0, 'EVAL',
          'return redis.call("GET", KEYS[1])', 2, $k[0], $k[2] ],
        [ 'EVAL kept key, touching moved key on source', $from, 0, 'EVAL',
          'return redis.call("GET", ARGV[1])', 1, $k[2], $k[0] ],
        [ 'EVAL cross-slot flag: kept key, touching moved key', $from, 0, 'EVAL',
          "#!lua flags=allow-cross-slot-keys\nreturn redis.call('GET', ARGV[1])",
          1, $k[2], $k[0] ],
        [ 'EVAL cross-slot flag: touching a key of the same node', $from, 0, 'EVAL',
          "#!lua flags=allow-cross-slot-keys\nreturn redis.call('GET', ARGV[1])",
          1, $k[2], $same ],
        [ 'EVAL no flag: touching a key of the same node', $from, 0, 'EVAL',
          'return redis.call("GET", ARGV[1])', 1, $k[2], $same ],
        [ 'EVAL cross-slot flag: touching a key of another node', $from, 0, 'EVAL',
          "#!lua flags=allow-cross-slot-keys\nreturn redis.call('GET', ARGV[1])",
          1, $k[2], $far ],
        [ 'EVAL cross-slot flag: pcall on a key of another node', $from, 0, 'EVAL',
          "#!lua flags=allow-cross-slot-keys\nlocal r = redis.pcall('GET', ARGV[1]) "
          . "if type(r) == 'table' and r.err then return 'pcall: ' .. r.err end return r",
          1, $k[2], $far ],
        [ 'EVAL declaring two slots', $from, 0, 'EVAL',
          'return 1', 2, $k[2], $same ],
        [ 'EVALSHA unknown on target with ASKING', $to, 1, 'EVALSHA',
          'ffffffffffffffffffffffffffffffffffffffff', 1, $k[0] ],
    ) {
        my ($what, $node, $asking, @cmd) = @$try;
        my $r = eval {
            $node->cmd('ASKING') if $asking;
            $node->cmd(@cmd);
        };
        my $e = $@;
        chomp $e;
        $e =~ s/^redis error: //;
        $err{$what} = $e;
        diag(sprintf '%-50s %s', $what, $e ne '' ? "-$e"
             : ref $r ? '[' . join(',', map { $_ // 'nil' } @$r) . ']'
             : '+' . ($r // 'nil'));
    }
    like($err{'GET moved key on source'}, qr/^ASK $slot 127\.0\.0\.1:$to->{port}$/, 'ASK from the source');
    is($err{'GET kept key on source'}, '', 'a kept key is served by the source');
    like($err{'MGET moved+kept on source'}, qr/^TRYAGAIN /, 'TRYAGAIN from the source');
    like($err{'ASKING MGET moved+kept on target'}, qr/^TRYAGAIN /, 'TRYAGAIN from the target');
    like($err{'GET moved key on target'}, qr/^MOVED $slot /, 'MOVED from the target without ASKING');
    is($err{'ASKING GET moved key on target'}, '', 'served by the target after ASKING');
    like($err{'SET new key on source'}, qr/^ASK /, 'a new key: ASK');

    # cmd_for_key follows ASK
    is($c->cmd_for_key($k[0], 'GET', $k[0]), "v-$k[0]", 'cmd_for_key follows ASK');
    is($c->cmd_for_key($k[4], 'SET', $k[4], 'new'), 'OK', 'a new key through ASK');
    is($to->cmd('ASKING') && $to->cmd('GET', $k[4]), 'new', '... it is on the target');

    ok($c->finish_migration($slot, $from, $to), 'finish_migration');
    is($c->node_for_slot($slot)->port, $to->port, '... the slot is the target\'s');
    is($from->cmd('CLUSTER', 'COUNTKEYSINSLOT', $slot), 0, '... no key left on the source');
    is($to->cmd('CLUSTER', 'COUNTKEYSINSLOT', $slot), 5, '... five keys on the target');
    ok($c->settled, '... settled');
    my $es = $c->errorstats;
    diag('errorstats: ' . join ' ', map { "$_=$es->{$_}" } sort keys %$es);
    ok($es->{ASK} && $es->{TRYAGAIN}, 'errorstats count ASK and TRYAGAIN');
}

# --- the cluster down and up --------------------------------------------------------
for my $how ('slot', 'freeze') {
    my $t0 = time;
    ok($c->cluster_down($how, 'rt-1'), "cluster_down($how)") or diag($c->why);
    my $down = time - $t0;
    my %seen;
    for my $n ($c->live) {
        for my $k ('rt-1', 'rt-2', 'rt-3', 'rt-4') {
            eval { $n->cmd('GET', $k) };
            (my $e = $@) =~ s/^redis error: //;
            chomp $e;
            $seen{$e}++ if $e =~ /CLUSTERDOWN/;
            my $r = eval { $n->cmd('EVAL', 'return redis.call("GET", ARGV[1])', 0, $k) };
            ($e = $@) =~ s/^redis error: //;
            chomp $e;
            $seen{"EVAL 0 keys: $e"}++ if $e;
        }
    }
    diag("$how: $_") for sort keys %seen;
    ok(grep(/^CLUSTERDOWN/, keys %seen), "$how: CLUSTERDOWN answered");
    $t0 = time;
    ok($c->cluster_up, "cluster_up after $how") or diag($c->why);
    diag(sprintf "$how: down in %.1f s, up again in %.1f s", $down, time - $t0);
    is($c->cmd_for_key('rt-1', 'GET', 'rt-1'), 1, "$how: served again");
}
ok($c->wait_ready(30), 'every replica linked again') or diag($c->why);
@m = $c->masters;

# --- reshard ---------------------------------------------------------------------------
{
    my ($from, $to) = @m[0, 1];
    my $before = () = $c->slots_served($from);
    my $t0 = time;
    my $job = $c->reshard(1500, $from, $to);
    my $rc = $job->wait(60);
    is($rc, 0, 'redis-cli --cluster reshard of 1500 slots') or diag($job->log);
    diag(sprintf 'reshard took %.1f s', time - $t0);
    my $after = () = $c->slots_served($from);
    is($before - $after, 1500, '1500 slots fewer on the source');
    ok($c->wait_ready(20), 'settled after the reshard') or diag($c->why);
    my @lost = grep { ($c->cmd_for_key($_, 'GET', $_) // '') ne substr($_, 3) }
               map { "rt-$_" } 1 .. 60;
    is(scalar @lost, 0, 'every key readable after the reshard') or diag("@lost");
}

# --- failover -----------------------------------------------------------------------------
{
    my $victim = ($c->masters)[2];
    my $replica = $c->replica_of($victim);
    my @keys = grep { $c->node_for_key($_) == $victim } map { "rt-$_" } 1 .. 60;
    ok(@keys, 'keys on the victim: ' . scalar @keys);
    $victim->cmd("WAIT", 1, 1000);
    my $t0 = time;
    $c->kill_master($victim);
    ok($c->wait_failover(30), 'wait_failover') or diag($c->why);
    diag(sprintf 'failover took %.1f s', time - $t0);
    is($c->node_for_key($keys[0])->port, $replica->port, 'the replica took the slots');
    is($c->cmd_for_key($keys[0], 'GET', $keys[0]), substr($keys[0], 3),
       'its keys are there');
    is(scalar $c->masters, 3, 'three masters again');
    $t0 = time;
    $c->restart($victim);
    ok($c->wait_ready(30), 'the killed node back, as a replica') or diag($c->why);
    diag(sprintf 'rejoined in %.1f s', time - $t0);
    is($victim->cmd('ROLE')->[0], 'slave', '... it is a replica');
}

done_testing;
