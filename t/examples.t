#!/usr/bin/perl
# The nginx configurations the docs show are ones nginx accepts: every
# server block of docs/operations.md passes "nginx -t" with the module
# (a throwaway certificate and secret file in place of the paths it names),
# and so does docs/example/nginx.conf.  The block that puts the webhook on
# the internet also does what the text says: the allowlist sees the client
# behind a trusted load balancer, refuses others and forged headers, and
# limit_req answers 503 over the rate.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use TikTokTest;

my $root = "$FindBin::Bin/..";

sub slurp { open my $fh, '<', $_[0] or die "$_[0]: $!"; local $/; <$fh> }

my $t = TikTokTest->new;
my $d = $t->dir;

# a certificate and a secret file for the paths the docs name
my $out = `openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=reports.example.com -keyout $d/cert.key -out $d/cert.pem 2>&1`;
is($?, 0, 'a self-signed certificate') or diag $out;
open my $fh, '>', "$d/secrets" or die $!;
print $fh "example-secret\n";
close $fh;

sub local_paths {
    my ($conf) = @_;
    $conf =~ s/^(\s*ssl_certificate)\s+\S+;/$1 $d\/cert.pem;/mg;
    $conf =~ s/^(\s*ssl_certificate_key)\s+\S+;/$1 $d\/cert.key;/mg;
    $conf =~ s/^(\s*tiktok_reports_secret_file)\s+\S+;/$1 $d\/secrets;/mg;
    return $conf;
}

my @blocks = slurp("$root/docs/operations.md") =~ /^```nginx\n(.*?)^```$/msg;
my @servers = grep { /^server \{/m } @blocks;
ok(@servers >= 2, 'docs/operations.md shows server blocks');
ok(scalar(grep { /listen 443 ssl;/ } @servers) >= 2, 'with listen 443 ssl');

for my $i (0 .. $#servers) {
    my $block = $servers[$i];
    my ($what) = $block =~ /^# (\S+)/m;
    $what = "server block " . ($i + 1) . ($what ? " ($what)" : '');
    my ($rc, $o) = $t->nginx_test_conf(http => local_paths($block));
    is($rc, 0, "nginx -t: $what") or diag $o;
    like($o, qr/test is successful/, "$what: test is successful");
}

# without a certificate, "listen 443 ssl" is refused: nginx -t does check it
{
    my ($ssl) = grep { /listen 443 ssl;/ } @servers;
    (my $bare = local_paths($ssl)) =~ s/^\s*ssl_certificate(?:_key)?\s.*\n//mg;
    my ($rc, $o) = $t->nginx_test_conf(http => $bare);
    isnt($rc, 0, 'the same block without ssl_certificate fails nginx -t');
    like($o, qr/no "ssl_certificate" is defined/, 'for the certificate');
}

# docs/example/nginx.conf, as .ci/demo fills it in
{
    my $so = TikTokTest::module_path();
    (my $conf = slurp("$root/docs/example/nginx.conf"))
        =~ s/%%MODULE%%/$so/g;
    $conf =~ s/%%DIR%%/$d\/demo/g;
    mkdir "$d/demo";
    open my $c, '>', "$d/demo/nginx.conf" or die $!;
    print $c $conf;
    close $c;
    # as the harness runs nginx -t: libasan preloaded for an ASan build,
    # no leak report for a process that exits without freeing its cycle
    local $ENV{TT_LEAKS} = 0;
    local %ENV = (%ENV, %{ $t->_env });
    my $o = `nginx -t -p $d/demo -c $d/demo/nginx.conf 2>&1`;
    is($?, 0, 'nginx -t: docs/example/nginx.conf') or diag $o;
}

# --- the webhook on the internet, served -----------------------------------

# the block has the zone (http context) and the server
my ($edge) = grep { /^limit_req_zone /m && /set_real_ip_from/ && /limit_req / } @servers;
ok($edge, 'the allowlist, real_ip and limit_req example')
    or BAIL_OUT('no such example in docs/operations.md');

$t->start_redis;
my $port = TikTokTest::free_port();
my $rport = $t->redis_port;
my $site = local_paths($edge);
# plain HTTP on loopback; this machine stands in for the load balancer; a
# rate of one a minute, so that the burst is all that passes
$site =~ s/^\s*listen 443 ssl;/    listen 127.0.0.1:$port;/m
    or die 'no listen 443 ssl';
$site =~ s/^\s*ssl_certificate.*\n//mg;
$site =~ s/10\.0\.0\.5:6379/127.0.0.1:$rport/ or die 'no Redis address';
$site =~ s{set_real_ip_from\s+\S+;}{set_real_ip_from  127.0.0.1;} or die 'no set_real_ip_from';
$site =~ s/\}\s*\z/    location = \/metrics { tiktok_reports_metrics; }\n}\n/;
$site =~ s/rate=\S+?;/rate=1r\/m;/ or die 'no rate';
$t->start_nginx(http => $site);

my $n = 0;
sub webhook {
    my (@xff) = @_;
    my $body = json_encode({ results => [ tiktok_dlr(id => 'edge-' . ++$n) ] });
    my $res = $t->http(port => $port, method => 'POST', path => '/webhooks/tiktok',
        headers => [ 'Content-Type' => 'application/json',
                     'X-Signature' => hmac_hex('sha256', 'example-secret', $body),
                     @xff ? ('X-Forwarded-For' => join ', ', @xff) : () ],
        body => $body);
    return $res ? $res->{status} : 'no answer';
}

is(webhook(), 403, 'the load balancer itself is not on the allowlist');
is(webhook('203.0.113.9'), 403, 'a client outside the allowlist: 403');
is(webhook('192.0.2.7', '203.0.113.9'), 403,
   'an allowed address forged in front of the real one: 403');
is(webhook('198.51.100.10'), 200, 'an allowed client behind the load balancer: stored');
is($t->redis('HGET', "tiktok:msg:{edge-$n}", 'status'), 'DELIVERED', 'in Redis');

# the first request of the minute and a burst of 200 pass, the rest get 503
my %codes;
$codes{ webhook('192.0.2.7') }++ for 1 .. 204;
ok($codes{503}, 'over the rate: 503') or diag explain \%codes;
is(($codes{200} // 0) + ($codes{503} // 0), 204, 'every request answered 200 or 503');
like($t->error_log, qr/limiting requests/, 'the error log says why');

my $m = $t->http(port => $port, path => '/metrics');
my ($other) = $m->{body} =~ /^tiktok_reports_requests_total\{location="webhook",code="other"\} (\d+)$/m;
is($other, 3, 'the 403s count as code="other"');
my ($limited) = $m->{body} =~ /^tiktok_reports_requests_total\{location="webhook",code="503"\} (\d+)$/m;
is($limited, $codes{503}, 'the rate-limited requests count as 503');

$t->check_logs;
done_testing;
