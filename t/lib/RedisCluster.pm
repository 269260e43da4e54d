package RedisCluster;

# A real Redis Cluster on loopback for one test file: six redis-server
# processes with --cluster-enabled (3 masters, 3 replicas,
# cluster-node-timeout 2000, no persistence) in the test's temp dir, made a
# cluster by "redis-cli --cluster create … --cluster-replicas 1", and the
# moves a test needs: slots half-migrated (ASK, TRYAGAIN), resharded by
# redis-cli, a master killed and its replica promoted, the cluster down
# (CLUSTERDOWN) and up again.
#
#   my $c = RedisCluster->new($t);          # $t = TikTokTest->new
#   $c->seeds                               # "127.0.0.1:P1 127.0.0.1:P2 …"
#   $c->cmd_for_key($key, 'HGETALL', $key)  # on whichever node serves it
#
# Ports: a node's client port P and its cluster bus port P + 10000 are
# both reserved (TikTokTest::reserve_port) and free, and both lie below the
# kernel's ephemeral range: P is taken from the bottom of
# TikTokTest::_port_range up to its top - 10000.
#
# Nodes are RedisProcs objects (port, addr, cmd, pid, log); cmd dies with
# "redis error: <the error line>\n" on an error reply, and after 5 s
# without a reply (read_timeout), so that a frozen node never hangs a test.

use strict;
use warnings;

use POSIX ();
use Time::HiRes qw(sleep time);
use TikTokTest;
use RedisProcs;

our $NODE_TIMEOUT = 2000;
our $SLOTS = 16384;

# --- keyslot ---------------------------------------------------------------

# keyslot($key), Redis's slot of a key, comes from TikTokTest (imported)

# --- start and stop ----------------------------------------------------------

# client ports whose bus ports (+10000) are reserved too
sub _ports {
    my ($n) = @_;
    my ($bottom, $top) = TikTokTest::_port_range();
    my $high = $top - 10000;
    die "no room for cluster bus ports below $top (range $bottom-$top)"
        if $high <= $bottom;
    my @ports;
    for (1 .. 2000) {
        last if @ports == $n;
        my $p = $bottom + int(rand($high - $bottom + 1));
        next unless TikTokTest::reserve_port($p);
        # the client port stays locked if its bus port is not free: harmless
        push @ports, $p if TikTokTest::reserve_port($p + 10000);
    }
    die "no $n free port pairs (P, P+10000) in $bottom-$high" if @ports < $n;
    return @ports;
}

# RedisCluster->new($t, conf => "extra lines\n", timeout => S)
sub new {
    my ($class, $t, %o) = @_;
    my $self = bless { t => $t, nodes => [], ids => {}, jobs => [],
                       frozen => {}, conf => $o{conf} || '' }, $class;
    my $t0 = time;
    for my $p (_ports(6)) {
        push @{ $self->{nodes} }, RedisProcs->new($t, port => $p,
            name => 'cluster', read_timeout => 5, conf => <<"EOF");
cluster-enabled yes
cluster-config-file nodes.conf
cluster-node-timeout $NODE_TIMEOUT
repl-diskless-sync-delay 0
repl-ping-replica-period 1
$self->{conf}
EOF
    }
    my $log = $t->dir . '/cluster-create.log';
    my $rc = $self->_run($log, 'redis-cli', '--cluster', 'create',
        (map { $_->addr } @{ $self->{nodes} }),
        '--cluster-replicas', 1, '--cluster-yes');
    die "redis-cli --cluster create failed ($rc):\n" . _slurp($log) if $rc;
    $self->wait_ready($o{timeout} || 30)
        or die "the cluster is not ready: " . ($self->{why} // '?');
    $self->{started_in} = time - $t0;
    return $self;
}

# seconds new() took
sub started_in { $_[0]{started_in} }

sub t { $_[0]{t} }

# every node started, dead or alive, in port order of creation
sub nodes { @{ $_[0]{nodes} } }

# the nodes running and not frozen
sub live { grep { $_->pid && !$_[0]{frozen}{ $_->port } } @{ $_[0]{nodes} } }

sub node_by_port {
    my ($self, $port) = @_;
    my ($n) = grep { $_->port == $port } @{ $self->{nodes} };
    return $n;
}

# a node's cluster id (CLUSTER MYID), remembered
sub id {
    my ($self, $node) = @_;
    return $self->{ids}{ $node->port } //= $node->cmd('CLUSTER', 'MYID');
}

# addresses for "tiktok_reports_redis … cluster;": the first $n nodes
# created (default 3: masters at creation)
sub seeds {
    my ($self, $n) = @_;
    $n ||= 3;
    return join ' ', map { $_->addr } @{ $self->{nodes} }[0 .. $n - 1];
}

sub stop {
    my ($self) = @_;
    local $?;
    # at global destruction the objects may be gone already
    for my $j (grep { defined } @{ $self->{jobs} || [] }) {
        $j->kill;
    }
    for my $n (grep { defined } @{ $self->{nodes} || [] }) {
        kill 'CONT', $n->pid if $n->pid;
        $n->stop('KILL');
    }
    $self->{frozen} = {};
}

sub DESTROY { $_[0]->stop }

# runs a command to its end, output to $log; returns its exit code
sub _run {
    my ($self, $log, @cmd) = @_;
    my $pid = _fork_exec($log, @cmd);
    waitpid $pid, 0;
    return $? >> 8 || $? & 127;
}

sub _fork_exec {
    my ($log, @cmd) = @_;
    my $pid = fork();
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        POSIX::setsid();
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log or POSIX::_exit(126);
        open STDERR, '>&', \*STDOUT;
        exec @cmd or POSIX::_exit(127);
    }
    return $pid;
}

sub _slurp {
    my ($f) = @_;
    open my $fh, '<', $f or return '';
    local $/;
    return <$fh>;
}

# --- state ---------------------------------------------------------------------

# CLUSTER SLOTS of one node as [[start, end, master port, replica ports…]…],
# sorted by start
sub slots_of {
    my ($self, $node) = @_;
    my $r = $node->cmd('CLUSTER', 'SLOTS');
    return [ sort { $a->[0] <=> $b->[0] }
             map { [ $_->[0], $_->[1], map { $_->[1] } @{$_}[2 .. $#$_] ] }
             @$r ];
}

# CLUSTER SLOTS of the first live node that answers
sub slots {
    my ($self) = @_;
    for my $n ($self->live) {
        my $s = eval { $self->slots_of($n) };
        return $s if $s;
    }
    die "no live node answers CLUSTER SLOTS";
}

sub node_for_slot {
    my ($self, $slot) = @_;
    for my $r (@{ $self->slots }) {
        return $self->node_by_port($r->[2])
            if $slot >= $r->[0] && $slot <= $r->[1];
    }
    return undef;
}

sub node_for_key { $_[0]->node_for_slot(keyslot($_[1])) }

# the whole map at once, for many keys: [slot] = node
sub slot_map {
    my ($self) = @_;
    my @map;
    for my $r (@{ $self->slots }) {
        my $n = $self->node_by_port($r->[2]);
        $map[$_] = $n for $r->[0] .. $r->[1];
    }
    return \@map;
}

# the slots a node serves, per CLUSTER SLOTS
sub slots_served {
    my ($self, $node) = @_;
    return map { $_->[0] .. $_->[1] }
           grep { $_->[2] == $node->port } @{ $self->slots };
}

# masters serving slots, per CLUSTER SLOTS, in slot order
sub masters {
    my ($self) = @_;
    my (%seen, @m);
    for my $r (@{ $self->slots }) {
        push @m, $self->node_by_port($r->[2]) unless $seen{ $r->[2] }++;
    }
    return @m;
}

# live nodes that say they are replicas (ROLE)
sub replicas {
    my ($self) = @_;
    return grep { (eval { $_->cmd('ROLE')->[0] } // '') eq 'slave' }
           $self->live;
}

# the live replica of a master (ROLE names its master's port)
sub replica_of {
    my ($self, $master) = @_;
    for my $n ($self->live) {
        my $role = eval { $n->cmd('ROLE') } or next;
        return $n if $role->[0] eq 'slave' && $role->[2] == $master->port;
    }
    return undef;
}

# INFO of one node as a hash
sub info {
    my ($self, $node, $section) = @_;
    my %h = $node->cmd('INFO', $section || 'default') =~ /^(\w+):(.*?)\r?$/mg;
    return \%h;
}

# error replies counted by every live node since its start (INFO
# errorstats): { ASK => n, MOVED => n, TRYAGAIN => n, CLUSTERDOWN => n, … }
sub errorstats {
    my ($self, @nodes) = @_;
    @nodes = $self->live unless @nodes;
    my %sum;
    for my $n (@nodes) {
        my $s = eval { $n->cmd('INFO', 'errorstats') } // '';
        $sum{$1} += $2 while $s =~ /^errorstat_(\w+):count=(\d+)/mg;
    }
    return \%sum;
}

# every live node: cluster_state:ok, the same slot ranges and masters in
# CLUSTER SLOTS, every slot covered by a live master; with replicas => 1
# also the same replicas everywhere, every range with one, and every
# replica's link up.  Sets $self->{why} when not.  (CLUSTER SLOTS lists a
# replica only once its replication offset is above 0: after the master's
# first write or replication ping, hence repl-ping-replica-period 1.)
sub settled {
    my ($self, %o) = @_;
    my $first;
    for my $n ($self->live) {
        my $info = eval { $n->cmd('CLUSTER', 'INFO') };
        return $self->_why("$n->{port}: $@") unless defined $info;
        return $self->_why("$n->{port}: not cluster_state:ok")
            unless $info =~ /^cluster_state:ok\r?$/m;
        my $s = join ' ', map { join ',', $o{replicas} ? @$_ : @$_[0 .. 2] }
                          @{ $self->slots_of($n) };
        $first //= $s;
        return $self->_why("$n->{port} sees $s, not $first")
            unless $s eq $first;
    }
    my ($covered, $next) = (0, 0);
    for my $r (@{ $self->slots }) {
        return $self->_why("slots $next-$r->[0] not covered") if $r->[0] != $next;
        $next = $r->[1] + 1;
        my $m = $self->node_by_port($r->[2]);
        return $self->_why("slot $r->[0]'s master $r->[2] is not running")
            unless $m && $m->pid && !$self->{frozen}{ $m->port };
        return $self->_why("slots $r->[0]-$r->[1] without a replica")
            if $o{replicas} && @$r < 4;
    }
    return $self->_why("slots from $next not covered") if $next != $SLOTS;
    if ($o{replicas}) {
        for my $n ($self->replicas) {
            return $self->_why("replica $n->{port} not linked")
                unless $self->info($n, 'replication')->{master_link_status}
                       eq 'up';
        }
    }
    return 1;
}

sub _why { $_[0]{why} = $_[1]; return 0 }

sub _wait {
    my ($self, $seconds, $cond) = @_;
    my $until = time + $seconds;
    while (time < $until) {
        return 1 if eval { $cond->() };
        $self->{why} = $@ if $@;
        sleep 0.1;
    }
    return 0;
}

# until settled with replicas; 1 or 0 (the reason in why())
sub wait_ready {
    my ($self, $seconds) = @_;
    return $self->_wait($seconds || 30, sub { $self->settled(replicas => 1) });
}

sub why { $_[0]{why} }

# --- keys ------------------------------------------------------------------------

# a command on the node that serves the key, following MOVED and ASK (with
# ASKING) up to 5 times; dies on any other error reply
sub cmd_for_key {
    my ($self, $key, @cmd) = @_;
    my $node = $self->node_for_key($key)
        or die "no node serves slot " . keyslot($key);
    my $asking;
    for (1 .. 6) {
        my $r = eval {
            $node->cmd('ASKING') if $asking;
            $node->cmd(@cmd);
        };
        return $r unless $@;
        my $e = $@;
        die $e unless $e =~ /^redis error: (MOVED|ASK) \d+ [^:\s]+:(\d+)/;
        $asking = $1 eq 'ASK';
        $node = $self->node_by_port($2) or die "redirected to unknown $2";
    }
    die "too many redirects for $key";
}

# whether a node has the key in its keyspace, whatever the slot's state
# (EXISTS would answer ASK or MOVED where the node does not serve it)
sub holds {
    my ($self, $node, $key) = @_;
    my $keys = $node->cmd('CLUSTER', 'GETKEYSINSLOT', keyslot($key), 100000);
    return scalar grep { $_ eq $key } @$keys;
}

# which live master holds the key, whatever the map says
sub holder {
    my ($self, $key) = @_;
    for my $n ($self->live) {
        next if (eval { $n->cmd('ROLE')->[0] } // '') ne 'master';
        return $n if $self->holds($n, $key);
    }
    return undef;
}

# a name "$prefix$n" (n = 1, 2, …) whose keyslot(sprintf($fmt, name)) is
# in the slots given (array ref) or on the node given; $fmt defaults to
# "%s" (the id is the key), e.g. "tiktok:msg:{%s}"
sub names_in {
    my ($self, $where, $count, $prefix, $fmt) = @_;
    $fmt ||= '%s';
    my %want;
    if (ref $where eq 'ARRAY') {
        %want = map { $_ => 1 } @$where;
    } else {
        %want = map { $_ => 1 } $self->slots_served($where);
    }
    my @names;
    for my $n (1 .. 10_000_000) {
        my $name = "$prefix$n";
        push @names, $name if $want{ keyslot(sprintf $fmt, $name) };
        return @names if @names == $count;
    }
    die "not $count names found";
}

# --- slot migration by hand ----------------------------------------------------

# the slot half-migrated from $from to $to: IMPORTING on $to, MIGRATING on
# $from, then the keys named MIGRATEd.  The source answers ASK for a key
# it lacks (a client must send ASKING to the target), TRYAGAIN for a
# command on several keys of the slot of which some are gone; the target
# answers TRYAGAIN to ASKING plus several keys not all of which it has.
sub migrate_slot_partially {
    my ($self, $slot, $from, $to, @keys) = @_;
    $to->cmd('CLUSTER', 'SETSLOT', $slot, 'IMPORTING', $self->id($from));
    $from->cmd('CLUSTER', 'SETSLOT', $slot, 'MIGRATING', $self->id($to));
    $self->_migrate($from, $to, @keys) if @keys;
    return 1;
}

sub _migrate {
    my ($self, $from, $to, @keys) = @_;
    my $r = $from->cmd('MIGRATE', $to->bind_addr, $to->port, '', 0, 5000,
                       'KEYS', @keys);
    return $r;
}

# the rest of the slot's keys moved, then the slot given to $to on $to,
# $from and every other master; waits until every node agrees
sub finish_migration {
    my ($self, $slot, $from, $to) = @_;
    while (1) {
        my $keys = $from->cmd('CLUSTER', 'GETKEYSINSLOT', $slot, 100);
        last unless @$keys;
        $self->_migrate($from, $to, @$keys);
    }
    my $id = $self->id($to);
    my @others = grep { $_ != $from && $_ != $to } $self->masters;
    for my $n ($to, $from, @others) {
        $n->cmd('CLUSTER', 'SETSLOT', $slot, 'NODE', $id);
    }
    return $self->_wait(20, sub {
        my $n = $self->node_for_slot($slot);
        return $n && $n->port == $to->port && $self->settled;
    });
}

# --- resharding with redis-cli ---------------------------------------------------

# redis-cli --cluster reshard of $n slots from one master to another, in
# the background; returns a job: ->wait($seconds) (exit code, undef if
# still running), ->running, ->log
sub reshard {
    my ($self, $n, $from, $to, @extra) = @_;
    my $log = $self->{t}->dir . '/reshard-' . (@{ $self->{jobs} } + 1) . '.log';
    my $pid = _fork_exec($log, 'redis-cli', '--cluster', 'reshard',
        $from->addr, '--cluster-from', $self->id($from),
        '--cluster-to', $self->id($to), '--cluster-slots', $n,
        '--cluster-yes', @extra);
    my $job = RedisCluster::Job->new($pid, $log);
    push @{ $self->{jobs} }, $job;
    return $job;
}

# --- failover ---------------------------------------------------------------------

# SIGKILL to a master; wait_failover then waits for its replica to take
# its slots
sub kill_master {
    my ($self, $node) = @_;
    $self->{killed}{ $node->port } = [ $self->slots_served($node) ];
    $node->stop('KILL');
    return 1;
}

# until every live node says cluster_state:ok, agrees on the map, and the
# slots of every killed master are served by a live node; 1 or 0
sub wait_failover {
    my ($self, $seconds) = @_;
    return $self->_wait($seconds || 30, sub {
        return 0 unless $self->settled;
        for my $port (keys %{ $self->{killed} || {} }) {
            my $slot = $self->{killed}{$port}[0] // next;
            my $n = $self->node_for_slot($slot);
            return $self->_why("slot $slot still on $port")
                if !$n || $n->port == $port;
        }
        return 1;
    });
}

# a killed node started again on its nodes.conf: it rejoins as a replica
# of the master that took its slots
sub restart {
    my ($self, $node) = @_;
    $node->start;
    delete $self->{killed}{ $node->port };
    return $node;
}

# --- the cluster down ----------------------------------------------------------------

# cluster_down($how, $where): makes every master answer CLUSTERDOWN to
# commands with keys, until cluster_up().  $where: a key or a master node
# (default: slot 0, the first master).  Two ways:
#   'slot' (default): one slot (of the key given, or slot 0) unassigned on
#       every master and replica with CLUSTER DELSLOTS: with
#       cluster-require-full-coverage (the default) each node turns
#       cluster_state:fail at once: "CLUSTERDOWN Hash slot not served" for
#       that slot, "CLUSTERDOWN The cluster is down" for all others.
#       cluster_up gives the slot back to its master (ADDSLOTS), the
#       others accept the claim by gossip.
#   'freeze': a master and its replica SIGSTOPped until the other masters
#       mark the master failed and turn cluster_state:fail (about the node
#       timeout, 2 s, and a little); the frozen master does not answer at
#       all; CLUSTER SLOTS elsewhere still names it (the map is complete,
#       the cluster down).  cluster_up: SIGCONT; the thawed replica often
#       takes over (it sees its master failed), or the failure flag is
#       cleared after twice the node timeout: masters() may have changed.
# Returns 1 once every live node says cluster_state:fail, 0 if not in 20 s.
sub cluster_down {
    my ($self, $how, $key) = @_;
    $how ||= 'slot';
    die "cluster already down" if $self->{down};
    if ($how eq 'slot') {
        my $slot = !defined $key ? 0
                 : ref $key ? ($self->slots_served($key))[0]
                 : keyslot($key);
        my $owner = $self->node_for_slot($slot);
        $self->{down} = [ slot => $slot, $owner ];
        for my $n ($owner, grep { $_ != $owner } $self->live) {
            eval { $n->cmd('CLUSTER', 'DELSLOTS', $slot) };
            die $@ if $@ && $@ !~ /already unassigned/;
        }
    } elsif ($how eq 'freeze') {
        my $master = !defined $key ? ($self->masters)[0]
                   : ref $key ? $key
                   : $self->node_for_key($key);
        my $replica = $self->replica_of($master);
        my @frozen = grep { defined } $master, $replica;
        $self->{down} = [ freeze => @frozen ];
        for my $n (@frozen) {
            kill 'STOP', $n->pid;
            $self->{frozen}{ $n->port } = 1;
        }
    } else {
        die "cluster_down: unknown way '$how'";
    }
    return $self->_wait_down;
}

# a ping the owner sent just before its DELSLOTS can reach a node just
# after that node's DELSLOTS and give the slot back to the owner there
# (seen under load): such a node is told again, until every node has said
# cluster_state:fail twice, 0.3 s apart
sub _wait_down {
    my ($self) = @_;
    my $fails = 0;
    return $self->_wait(20, sub {
        for my $n ($self->live) {
            next if $n->cmd('CLUSTER', 'INFO') =~ /^cluster_state:fail\r?$/m;
            $fails = 0;
            if ($self->{down}[0] eq 'slot') {
                $self->{delslots_again}++;
                eval { $n->cmd('CLUSTER', 'DELSLOTS', $self->{down}[1]) };
            }
            return $self->_why("$n->{port} still ok");
        }
        return 1 if ++$fails == 2;
        sleep 0.3;
        return 0;
    });
}

# back up: 1 once settled again (every node ok, one map), 0 if not in 30 s
sub cluster_up {
    my ($self) = @_;
    my $down = delete $self->{down} or return 1;
    my ($how, @what) = @$down;
    if ($how eq 'slot') {
        my ($slot, $owner) = @what;
        eval { $owner->cmd('CLUSTER', 'ADDSLOTS', $slot) };
        die $@ if $@ && $@ !~ /already busy/;
    } else {
        for my $n (@what) {
            delete $self->{frozen}{ $n->port };
            kill 'CONT', $n->pid;
        }
    }
    return $self->_wait(30, sub { $self->settled });
}


package RedisCluster::Job;

# a background process and its log

use POSIX ();
use Time::HiRes qw(sleep time);

sub new {
    my ($class, $pid, $log) = @_;
    return bless { pid => $pid, log => $log }, $class;
}

sub running {
    my ($self) = @_;
    return 0 if defined $self->{rc};
    if (waitpid($self->{pid}, POSIX::WNOHANG()) == $self->{pid}) {
        $self->{rc} = $? >> 8 || $? & 127;
        return 0;
    }
    return 1;
}

# exit code, or undef if still running after $seconds
sub wait {
    my ($self, $seconds) = @_;
    my $until = time + ($seconds // 60);
    while ($self->running) {
        return undef if time >= $until;
        sleep 0.05;
    }
    return $self->{rc};
}

sub log {
    my ($self) = @_;
    open my $fh, '<', $self->{log} or return '';
    local $/;
    return <$fh>;
}

sub kill {
    my ($self) = @_;
    return unless $self->running;
    local $?;
    CORE::kill('KILL', $self->{pid});
    waitpid $self->{pid}, 0;
    $self->{rc} = -1;
}

1;
