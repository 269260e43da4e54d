#!/usr/bin/perl
# What an nginx operator expects: configuration errors at the line of the
# directive at fault.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use TikTokTest;

# --- configuration errors, at the directive's file:line --------------------

# the line of the conf that carries "# <mark>"
sub line_of {
    my ($t, $mark) = @_;
    open my $fh, '<', $t->dir . '/nginx.conf' or die $!;
    my $n = 0;
    while (<$fh>) {
        $n++;
        return $n if /# \Q$mark\E$/;
    }
    die "no line marked $mark";
}

{
    my $t = TikTokTest->new;
    my $secrets = join '', map { "            tiktok_reports_secret s$_;"
                                 . ($_ == 17 ? " # too-many" : '') . "\n" }
                           1 .. 17;

    open my $sf, '>', $t->dir . '/secrets' or die $!;
    print $sf "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\nnot-a-whsec-secret\n";
    close $sf;

    my @cases = (
        [ 'a webhook without signature or secret', '', <<'EOF',
        location = /hooks/a {
            tiktok_reports_webhook; # here
        }
EOF
          qr{"tiktok_reports_webhook" needs "tiktok_reports_signature" with at least one "tiktok_reports_secret", or "tiktok_reports_signature off" for location "/hooks/a"} ],

        [ 'a signature without secret', <<'EOF', <<'EOF',
    tiktok_reports_signature hmac-sha256;
EOF
        location /x {
            location /x/hook {
                tiktok_reports_webhook; # here
            }
        }
EOF
          qr{"tiktok_reports_webhook" needs .* for location "/x/hook"} ],

        [ 'an unknown digest', '', <<'EOF',
        location = /w {
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha3; # here
            tiktok_reports_secret x;
        }
EOF
          qr{"tiktok_reports_signature": unknown digest "sha3"} ],

        [ 'an unknown digest nobody uses yet', <<'EOF', '',
    tiktok_reports_signature hmac-whirlpool; # here
EOF
          qr{"tiktok_reports_signature": unknown digest "whirlpool"} ],

        [ 'an empty secret', '', <<'EOF',
        location = /w {
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha256;
            tiktok_reports_secret ""; # here
        }
EOF
          qr{"tiktok_reports_secret" directive must not be empty} ],

        [ 'a secret inherited into a location it does not fit', <<'EOF', <<'EOF',
    tiktok_reports_secret plain-secret; # here
EOF
        location = /hmac {
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha256;
        }
        location = /std {
            tiktok_reports_webhook;
            tiktok_reports_signature standard-webhooks;
        }
EOF
          qr{"tiktok_reports_secret": secret must be "whsec_" followed by base64 for location "/std"} ],

        [ 'a bad secret in a secret file', '', <<'EOF',
        location = /std {
            tiktok_reports_webhook;
            tiktok_reports_signature standard-webhooks;
            tiktok_reports_secret_file %%DIR%%/secrets; # here
        }
EOF
          qr{"tiktok_reports_secret": secret must be "whsec_" followed by base64 for location "/std"} ],

        [ 'too many secrets', '', <<"EOF",
        location = /w {
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha256;
$secrets        }
EOF
          qr{"tiktok_reports_secret": too many secrets \(at most 16\)},
          'too-many' ],

        [ 'a zero timeout', <<'EOF', '',
    tiktok_reports_redis_timeout 0; # here
EOF
          qr{"tiktok_reports_redis_timeout" must be greater than 0} ],

        [ 'a webhook that is also a lookup', '', <<'EOF',
        location = /w {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_status; # here
        }
EOF
          qr{"tiktok_reports_status": the location already has the role "webhook"} ],

        [ 'metrics and a lookup in one location', '', <<'EOF',
        location = /m {
            tiktok_reports_metrics;
            tiktok_reports_status; # here
        }
EOF
          qr{"tiktok_reports_status": the location already has the role "metrics"} ],

    );

    for my $c (@cases) {
        my ($name, $http, $server, $re, $mark) = @$c;
        my ($rc, $out) = $t->nginx_test_conf(http => $http, server => $server);
        isnt($rc, 0, "$name: refused");
        like($out, $re, "$name: says what") or diag $out;
        my $where = $t->dir . '/nginx.conf:' . line_of($t, $mark || 'here');
        like($out, qr{$re.* in \Q$where\E$}m, "$name: at $where")
            or diag $out;
        like($out, qr{\[emerg\]}, "$name: at emerg");
    }

    # the inherited secret that fits an hmac location is not an error there
    my ($rc, $out) = $t->nginx_test_conf(http => <<'EOF', server => <<'EOF');
    tiktok_reports_secret plain-secret;
EOF
        location = /hmac {
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha256;
        }
EOF
    is($rc, 0, 'an inherited secret that fits its location passes')
        or diag $out;
}

done_testing;
