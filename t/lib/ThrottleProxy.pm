package ThrottleProxy;

# A TCP proxy in front of a real Redis that makes it slow: what the client
# (nginx) sends is passed on at no more than `rate` bytes a second, so
# commands are answered correctly but only a few hundred a second, as by an
# overloaded server.  Replies go back at once.  It runs in a child process
# and ends by itself after `lifetime` seconds.

use strict;
use warnings;

use IO::Socket::INET;
use IO::Select;
use POSIX ();
use Time::HiRes qw(time);

sub new {
    my ($class, %opt) = @_;
    my $listen = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
        LocalPort => 0, Proto => 'tcp', Listen => 16, ReuseAddr => 1)
        or die "proxy listen: $!";
    my $self = bless { port => $listen->sockport, %opt }, $class;
    my $pid = fork();
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        # never back into the test's code, whatever happens here
        eval { $self->_run($listen) };
        print STDERR "proxy: $@" if $@;
        POSIX::_exit(0);
    }
    close $listen;
    $self->{pid} = $pid;
    return $self;
}

sub port { $_[0]{port} }

# nothing passes until resume(); then everything passes at once
sub pause  { kill 'USR1', $_[0]{pid} }
sub resume { kill 'USR2', $_[0]{pid} }

sub stop {
    my ($self) = @_;
    my $pid = delete $self->{pid} or return;
    kill 'TERM', $pid;
    waitpid $pid, 0;
}

sub DESTROY { $_[0]->stop }

sub _run {
    my ($self, $listen) = @_;
    my $rate = $self->{rate} || 20000;
    local $SIG{USR1} = sub { $rate = 0 };
    local $SIG{USR2} = sub { $rate = 1e9 };
    my $until = time + ($self->{lifetime} || 120);
    my $tick = 0.01;
    my $sel = IO::Select->new($listen);
    my (%peer, %down);    # fileno -> its peer's socket; client sides

    my $close = sub {
        my ($s) = @_;
        my @pair = grep { $_ && defined fileno $_ } ($s, $peer{fileno $s});
        for my $x (@pair) {
            my $f = fileno $x;
            $sel->remove($x);
            delete $peer{$f};
            delete $down{$f};
        }
        close $_ for @pair;
    };

    my $budget = 0;
    my $last = time;
    while (time < $until) {
        my $now = time;
        $budget += ($now - $last) * $rate;
        $budget = $rate * $tick * 2 if $budget > $rate * $tick * 2;
        $budget = 0 if $rate == 0;
        $last = $now;

        # the clients' sides are watched only while there is budget
        my $ready = IO::Select->new(grep {
            $_ == $listen || !$down{fileno $_} || $budget >= 1
        } $sel->handles);

        for my $s ($ready->can_read($tick)) {
            next unless defined fileno $s;    # closed with its peer
            if ($s == $listen) {
                my $c = $listen->accept or next;
                my $r = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                    PeerPort => $self->{redis_port}, Proto => 'tcp')
                    or do { close $c; next };
                $peer{fileno $c} = $r;
                $peer{fileno $r} = $c;
                $down{fileno $c} = 1;
                $sel->add($c, $r);
                next;
            }
            my $f = fileno $s;
            next unless $peer{$f};
            # the client's side is read only as fast as the rate allows
            my $max = $down{$f} ? int($budget) : 65536;
            next if $max <= 0;
            my $n = sysread($s, my $buf, $max);
            if (!$n) {
                $close->($s);
                next;
            }
            $budget -= $n if $down{$f};
            my $p = $peer{$f};
            my $off = 0;
            while ($off < $n) {
                my $w = syswrite($p, $buf, $n - $off, $off);
                if (!defined $w) {
                    $close->($s);
                    last;
                }
                $off += $w;
            }
        }
    }
}

1;
